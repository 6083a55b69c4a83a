//! The mailer against a real SMTP server (aiosmtpd, see support::smtp).

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cadence::config::{Rep, Smtp, TransportKind};
use cadence::domain::EmailAddress;
use cadence::mailer::{new_message_id, prepare, Outgoing, RepMailer, SendError};
use chrono::TimeZone;

use crate::support::smtp::{Fault, ServerTls, SmtpOptions, SmtpServer, Stage};
use crate::support::SETTLE;

fn find(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn init() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn rep(smtp: Smtp) -> Rep {
    Rep {
        id: "nik".into(),
        name: "Nik Levnaich".into(),
        email: EmailAddress::parse("nik@example.com").unwrap(),
        daily_limit: 200,
        domain_daily_limit: None,
        min_gap: Duration::ZERO,
        timezone: chrono_tz::UTC,
        signature: String::new(),
        api_token_env: None,
        smtp,
        dkim: None,
        imap: None,
    }
}

fn mailer(smtp: Smtp) -> RepMailer {
    RepMailer::new(&rep(smtp), Path::new("/nonexistent-root")).expect("mailer")
}

fn outgoing(to: &str) -> Outgoing {
    Outgoing {
        from_name: "Nik Levnaich".into(),
        from: EmailAddress::parse("nik@example.com").unwrap(),
        to_name: "Dana Prospect".into(),
        to: EmailAddress::parse(to).unwrap(),
        subject: "Quick question about Q3".into(),
        text: "Hi Dana,\n\n.leading dot line\nThanks,\nNik\n".into(),
        html: None,
        message_id: new_message_id("example.com", cadence::clock::Clock::System.now()),
        in_reply_to: None,
        references: vec![],
        unsubscribe_mailto: "mailto:nik@example.com?subject=unsubscribe".into(),
        unsubscribe_url: "https://cadence.example.com/unsubscribe/TOKEN".into(),
        date: chrono::Utc.with_ymd_and_hms(2024, 3, 5, 14, 30, 0).unwrap(),
    }
}

#[tokio::test]
async fn plain_send_arrives_byte_exact() {
    init();
    let server = SmtpServer::start(SmtpOptions::default());
    let m = mailer(server.smtp_config());
    let mut o = outgoing("dana@lead.example.org");
    o.in_reply_to = Some("second@example.com".into());
    o.references = vec!["first@example.com".into(), "second@example.com".into()];
    o.html = Some("<p>Hi Dana, grüße</p>".into());
    // Built once: the MIME boundary is random.
    let prepared = prepare(&o).unwrap();
    m.send_prepared(&prepared).await.expect("send");

    let got = server.wait_for(1, SETTLE);
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(r.mail_from, "nik@example.com");
    assert_eq!(r.rcpt_to, ["dana@lead.example.org"]);
    assert_eq!(r.raw, prepared.bytes, "stored bytes are the built bytes");
    assert_eq!(r.header("Message-ID").unwrap(), format!("<{}>", o.message_id));
    assert_eq!(r.header("In-Reply-To").unwrap(), "<second@example.com>");
    assert_eq!(r.header("References").unwrap().split_whitespace().collect::<Vec<_>>(), ["<first@example.com>", "<second@example.com>"]);
    assert_eq!(
        r.header("List-Unsubscribe").unwrap().replace(' ', ""),
        "<mailto:nik@example.com?subject=unsubscribe>,<https://cadence.example.com/unsubscribe/TOKEN>"
    );
    assert_eq!(r.header("List-Unsubscribe-Post").unwrap(), "List-Unsubscribe=One-Click");
    assert!(r.header("Content-Type").unwrap().starts_with("multipart/alternative"));
    assert!(r.header("Bcc").is_none());
    let parsed = r.parsed();
    assert!(parsed.body_text(0).unwrap().contains("Hi Dana,"));
    // Dot-stuffed on the wire, unstuffed by the server: the line is intact.
    assert!(find(&r.raw, b"\r\n.leading dot line\r\n"));
    assert_eq!(parsed.body_html(0).unwrap(), "<p>Hi Dana, grüße</p>");
}

#[tokio::test]
async fn transient_451_at_rcpt_then_success() {
    init();
    let server = SmtpServer::start(SmtpOptions {
        faults: vec![Fault::reply(Stage::Rcpt, "451 4.3.0 try again later").once()],
        ..Default::default()
    });
    let m = mailer(server.smtp_config());
    let o = outgoing("dana@lead.example.org");
    let first = m.send(&o).await.expect_err("451 fails the first send");
    assert!(first.is_transient(), "{first:?}");
    assert!(first.to_string().contains("451"), "{first}");
    m.send(&o).await.expect("second send");
    let got = server.wait_for(1, SETTLE);
    assert_eq!(got.len(), 1, "exactly one message stored");
    assert_eq!(server.stats().faults_fired, 1);
}

#[tokio::test]
async fn rcpt_550_is_a_permanent_recipient_refusal() {
    init();
    let server = SmtpServer::start(SmtpOptions {
        faults: vec![Fault::reply(Stage::Rcpt, "550 5.1.1 no such user").for_rcpt("gone@lead.example.org")],
        ..Default::default()
    });
    let m = mailer(server.smtp_config());
    match m.send(&outgoing("gone@lead.example.org")).await {
        Err(SendError::Permanent { code: 550, recipient: true, message }) => {
            assert!(message.contains("no such user"), "{message}")
        }
        other => panic!("expected a permanent recipient refusal, got {other:?}"),
    }
    // The fault is per recipient: others still go through.
    m.send(&outgoing("dana@lead.example.org")).await.expect("other recipient");
    assert_eq!(server.wait_for(1, SETTLE).len(), 1);
}

#[tokio::test]
async fn the_envelope_is_pipelined_only_where_the_server_offers_it() {
    init();
    // Offered (the test server's default, and Postfix's): MAIL, RCPT and
    // DATA leave in one write. Not offered: one command at a time. A
    // refusal lands on its stage either way, and the connection goes on.
    for offered in [true, false] {
        let server = SmtpServer::start(SmtpOptions {
            faults: vec![Fault::reply(Stage::Rcpt, "550 5.1.1 no such user").for_rcpt("gone@lead.example.org")],
            no_pipelining: !offered,
            ..Default::default()
        });
        let m = mailer(server.smtp_config());
        m.send(&outgoing("dana@lead.example.org")).await.expect("send");
        let bounce = m.send(&outgoing("gone@lead.example.org")).await.expect_err("refused at RCPT");
        assert!(matches!(bounce, SendError::Permanent { code: 550, recipient: true, .. }), "{bounce:?}");
        m.send(&outgoing("erin@lead.example.org")).await.expect("after the refusal");
        assert_eq!(server.wait_for(2, SETTLE).len(), 2);
        let stats = server.stats();
        assert_eq!((stats.mail, stats.mail_pipelined), (3, if offered { 3 } else { 0 }), "offered: {offered}, {stats:?}");
    }
}

#[tokio::test]
async fn replies_at_other_stages_are_classified() {
    init();
    let server = SmtpServer::start(SmtpOptions::default());
    let m = mailer(server.smtp_config());
    let cases: Vec<(Fault, &str)> = vec![
        (Fault::reply(Stage::Connect, "421 4.3.2 too busy"), "transient"),
        (Fault::reply(Stage::Mail, "452 4.3.1 insufficient storage"), "transient"),
        (Fault::reply(Stage::Data, "450 4.2.0 later"), "transient"),
        (Fault::reply(Stage::DataEnd, "451 4.7.1 greylisted"), "transient"),
        (Fault::reply(Stage::DataEnd, "552 5.3.4 message too big"), "permanent"),
        (Fault::reply(Stage::DataEnd, "554 5.7.1 rejected as spam"), "permanent"),
        (Fault::reply(Stage::Mail, "553 5.1.8 bad sender"), "permanent"),
        (Fault::drop_connection(Stage::Rcpt), "transient"),
        (Fault::drop_connection(Stage::DataEnd), "unknown"),
    ];
    for (fault, want) in cases {
        server.set_faults(std::slice::from_ref(&fault));
        let err = m.send(&outgoing("dana@lead.example.org")).await.expect_err("the fault fails the send");
        let got = match &err {
            SendError::Transient(_) => "transient",
            SendError::Permanent { recipient: false, .. } => "permanent",
            SendError::Unknown(_) => "unknown",
            _ => "other",
        };
        assert_eq!(got, want, "{fault:?} gave {err:?}");
    }
    assert_eq!(server.message_count(), 0, "no fault lets a message through");
    server.clear_faults();
    m.send(&outgoing("dana@lead.example.org")).await.expect("after faults");
    assert_eq!(server.message_count(), 1);
}

#[tokio::test]
async fn connection_lost_while_sending_the_body_is_transient() {
    init();
    let server = SmtpServer::start(SmtpOptions { faults: vec![Fault::drop_connection(Stage::DataBody)], ..Default::default() });
    let m = mailer(server.smtp_config());
    let mut o = outgoing("dana@lead.example.org");
    // Far more than the loopback socket buffers hold, so the server's
    // close is seen while the body is still being written.
    o.text = "All work and no play makes Jack a dull boy.\n".repeat(600_000);
    let err = m.send(&o).await.expect_err("dropped mid-DATA");
    assert!(err.is_transient(), "{err:?}");
    assert_eq!(server.message_count(), 0);
}

#[tokio::test]
async fn no_answer_after_the_dot_is_unknown() {
    init();
    let server = SmtpServer::start(SmtpOptions { faults: vec![Fault::hang(Stage::DataEnd)], ..Default::default() });
    let mut smtp = server.smtp_config();
    smtp.timeout = Duration::from_secs(1);
    let m = mailer(smtp);
    let err = m.send(&outgoing("dana@lead.example.org")).await.expect_err("hangs");
    assert!(matches!(err, SendError::Unknown(_)), "{err:?}");
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    init();
    let server = SmtpServer::start(SmtpOptions { faults: vec![Fault::hang(Stage::Connect)], ..Default::default() });
    let mut smtp = server.smtp_config();
    smtp.timeout = Duration::from_secs(1);
    let m = mailer(smtp);
    let started = Instant::now();
    let err = m.send(&outgoing("dana@lead.example.org")).await.expect_err("silent server");
    assert!(err.is_transient(), "{err:?}");
    assert!(err.to_string().contains("no answer"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5), "bounded by the 1 s timeout");
}

#[tokio::test]
async fn refused_connection_is_transient() {
    init();
    let mut smtp = SmtpServer::start(SmtpOptions::default()).smtp_config();
    let (_held, port) = crate::support::refused_port();
    smtp.port = port;
    let err = mailer(smtp).send(&outgoing("dana@lead.example.org")).await.expect_err("nothing listens");
    assert!(err.is_transient(), "{err:?}");
}

#[tokio::test]
async fn starttls_with_private_ca() {
    init();
    let server = SmtpServer::start(SmtpOptions { tls: ServerTls::StartTls, ..Default::default() });
    let m = mailer(server.smtp_config());
    m.send(&outgoing("dana@lead.example.org")).await.expect("starttls send");
    m.send(&outgoing("dana@lead.example.org")).await.expect("reused");
    assert_eq!(server.wait_for(2, SETTLE).len(), 2);
    assert_eq!(server.stats().connections, 1);
}

#[tokio::test]
async fn implicit_tls_with_private_ca() {
    init();
    let server = SmtpServer::start(SmtpOptions { tls: ServerTls::Implicit, ..Default::default() });
    let m = mailer(server.smtp_config());
    m.send(&outgoing("dana@lead.example.org")).await.expect("tls send");
    assert_eq!(server.wait_for(1, SETTLE).len(), 1);
}

#[tokio::test]
async fn untrusted_certificate_is_refused() {
    init();
    for tls in [ServerTls::StartTls, ServerTls::Implicit] {
        let server = SmtpServer::start(SmtpOptions { tls, ..Default::default() });
        let mut smtp = server.smtp_config();
        smtp.ca_file = None;
        let err = mailer(smtp).send(&outgoing("dana@lead.example.org")).await.expect_err("self-made CA is not a public root");
        assert!(err.to_string().contains("certificate"), "{tls:?}: {err}");
        assert!(matches!(err, SendError::Local(_)), "{tls:?}: {err:?}");
        assert_eq!(server.message_count(), 0);
    }
}

#[tokio::test]
async fn auth_with_right_and_wrong_password() {
    init();
    let server = SmtpServer::start(SmtpOptions { auth: Some(("nik".into(), "s3cret-pw".into())), ..Default::default() });
    mailer(server.smtp_config()).send(&outgoing("dana@lead.example.org")).await.expect("right password");
    assert_eq!(server.stats().auth_ok, 1);

    let var = format!("CADENCE_IT_WRONG_PW_{}", server.port());
    std::env::set_var(&var, "not-the-password");
    let mut smtp = server.smtp_config();
    smtp.password_env = Some(var);
    let err = mailer(smtp).send(&outgoing("dana@lead.example.org")).await.expect_err("wrong password");
    assert!(matches!(err, SendError::Local(_)), "{err:?}");
    assert!(err.to_string().contains("535"), "{err}");
    assert!(err.to_string().contains("check smtp.username and the password"), "says what to do: {err}");
    assert!(!err.to_string().contains("not-the-password"), "{err}");
    assert_eq!(server.stats().auth_failed, 1);

    let mut smtp = server.smtp_config();
    smtp.password_env = Some("CADENCE_IT_UNSET_VARIABLE".into());
    let err = mailer(smtp).send(&outgoing("dana@lead.example.org")).await.expect_err("missing secret");
    assert!(matches!(err, SendError::Local(_)), "{err:?}");
    assert!(err.to_string().contains("CADENCE_IT_UNSET_VARIABLE"), "{err}");

    assert_eq!(server.message_count(), 1);
}

#[tokio::test]
async fn stale_pooled_connection_is_replaced_transparently() {
    init();
    let server = SmtpServer::start(SmtpOptions::default());
    let m = mailer(server.smtp_config());
    m.send(&outgoing("dana@lead.example.org")).await.expect("first");
    // The server hangs up on the pooled connection's next command.
    server.set_faults(&[Fault::reply(Stage::Mail, "421 4.4.2 idle too long").once()]);
    m.send(&outgoing("dana@lead.example.org")).await.expect("retried on a fresh connection");
    assert_eq!(server.wait_for(2, SETTLE).len(), 2);
    assert_eq!(server.stats().connections, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_sends_share_the_pool() {
    init();
    let server = SmtpServer::start(SmtpOptions::default());
    let smtp = server.smtp_config();
    let pool = smtp.pool_size;
    let m = Arc::new(mailer(smtp));
    let mut tasks = Vec::new();
    let mut ids = HashSet::new();
    for i in 0..20 {
        let o = outgoing(&format!("lead{i}@lead.example.org"));
        ids.insert(format!("<{}>", o.message_id));
        let m = m.clone();
        tasks.push(tokio::spawn(async move { m.send(&o).await }));
    }
    for t in tasks {
        t.await.unwrap().expect("send");
    }
    let got = server.wait_for_async(20, SETTLE).await;
    assert_eq!(got.len(), 20);
    let seen: HashSet<String> = got.iter().map(|r| r.header("Message-ID").unwrap()).collect();
    assert_eq!(seen, ids, "every message exactly once");
    let stats = server.stats();
    assert!(stats.connections <= pool, "{stats:?}");
    assert_eq!(stats.noop, 0, "no NOOP before reuse");
    m.close().await;
    assert_eq!(server.stats().quit, stats.connections, "close says QUIT on each");
}

#[tokio::test]
async fn file_transport_writes_one_eml() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let smtp = Smtp {
        transport: TransportKind::File,
        dir: "outbox".into(),
        host: String::new(),
        port: 0,
        tls: cadence::config::TlsMode::None,
        username: None,
        password_env: None,
        ca_file: None,
        timeout: Duration::from_secs(5),
        pool_size: 1,
        max_attempts: 1,
    };
    let m = RepMailer::new(&rep(smtp), dir.path()).unwrap();
    let o = outgoing("dana@lead.example.org");
    m.send(&o).await.expect("file send");
    let files: Vec<_> = std::fs::read_dir(dir.path().join("outbox")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0].file_name().unwrap().to_str().unwrap(), format!("{}.eml", o.message_id));
    assert_eq!(std::fs::read(&files[0]).unwrap(), prepare(&o).unwrap().bytes);
}
