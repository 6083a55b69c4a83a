//! Tests of the test rig itself: if these fail, fix the rig (or the machine)
//! before reading anything into the other integration tests.

use std::sync::Arc;
use std::time::Duration;

use async_imap::extensions::idle::IdleResponse;
use async_imap::imap_proto::{MailboxDatum, Response};
use sqlx::Connection;
use tokio::net::TcpStream;

use crate::support::dovecot::{fetch_all, Dovecot};
use crate::support::postgres::{database_exists, fresh_database};
use crate::support::{free_port, port_is_free, wait_until, TempProject, HOST};

const ALICE: (&str, &str) = ("alice@example.test", "alice-secret");
const BOB: (&str, &str) = ("bob", "bob secret with spaces");

fn message(subject: &str) -> Vec<u8> {
    format!(
        "From: Lead <lead@example.test>\r\n\
         To: Alice <alice@example.test>\r\n\
         Subject: {subject}\r\n\
         Message-ID: <{subject}@example.test>\r\n\
         Date: Mon, 02 Mar 2026 10:00:00 +0000\r\n\
         \r\n\
         Body of {subject}.\r\n"
    )
    .into_bytes()
}

#[tokio::test]
async fn dovecot_serves_appended_messages_byte_for_byte() {
    let dovecot = Dovecot::start(&[ALICE, BOB]).await;
    let (first, second) = (message("first"), message("second"));
    dovecot.append_all(ALICE.0, "INBOX", [first.as_slice(), second.as_slice()]).await;
    dovecot.append(BOB.0, "Archive/2026", &message("bob's")).await;

    let mut alice = dovecot.login(ALICE.0).await;
    assert_eq!(fetch_all(&mut alice, "INBOX").await, vec![first, second]);
    let mut bob = dovecot.login(BOB.0).await;
    assert_eq!(fetch_all(&mut bob, "INBOX").await, Vec::<Vec<u8>>::new());
    assert_eq!(fetch_all(&mut bob, "Archive/2026").await, vec![message("bob's")]);
}

#[tokio::test]
async fn dovecot_rejects_a_wrong_password_and_keeps_accepting_logins() {
    let dovecot = Dovecot::start(&[ALICE]).await;
    for _ in 0..3 {
        let client = dovecot.connect().await;
        assert!(client.login(ALICE.0, "wrong").await.is_err());
    }
    let mut session = dovecot.login(ALICE.0).await;
    session.select("INBOX").await.unwrap();
}

#[tokio::test]
async fn dovecot_idle_reports_a_new_append() {
    let dovecot = Dovecot::start(&[ALICE]).await;
    let mut session = dovecot.login(ALICE.0).await;
    session.select("INBOX").await.unwrap();
    let mut idle = session.idle();
    idle.init().await.unwrap();

    let new = message("new");
    let (wait, _stop) = idle.wait_with_timeout(Duration::from_secs(15));
    let (response, ()) = tokio::join!(wait, dovecot.append(ALICE.0, "INBOX", &new));
    match response.unwrap() {
        IdleResponse::NewData(data) => {
            assert!(matches!(data.parsed(), Response::MailboxData(MailboxDatum::Exists(1))), "expected * 1 EXISTS, got {:?}", data.parsed())
        }
        other => panic!("IDLE saw no new message: {other:?}"),
    }
    idle.done().await.unwrap();
}

#[tokio::test]
async fn dovecot_restart_keeps_mail_and_ports_and_drops_old_connections() {
    let mut dovecot = Dovecot::start(&[ALICE]).await;
    dovecot.append(ALICE.0, "INBOX", &message("before-stop")).await;
    let mut open = dovecot.login(ALICE.0).await;
    open.select("INBOX").await.unwrap();
    let port = dovecot.port();

    dovecot.stop();
    assert!(!dovecot.is_running());
    assert!(TcpStream::connect((HOST, port)).await.is_err(), "port {port} still answers after stop");
    assert!(open.noop().await.is_err(), "a connection opened before stop still works: its imap process survived");

    dovecot.start_again().await;
    assert_eq!(dovecot.port(), port);
    dovecot.append(ALICE.0, "INBOX", &message("after-start")).await;
    let mut session = dovecot.login(ALICE.0).await;
    assert_eq!(fetch_all(&mut session, "INBOX").await, vec![message("before-stop"), message("after-start")]);
}

#[tokio::test]
async fn dovecot_uid_validity_reset_is_seen_by_clients() {
    let dovecot = Dovecot::start(&[ALICE]).await;
    dovecot.append(ALICE.0, "INBOX", &message("kept")).await;
    let old = dovecot.uid_validity(ALICE.0, "INBOX").await;

    let new = dovecot.uid_validity_reset(ALICE.0, "INBOX").await;
    assert_ne!(new, old);
    let mut session = dovecot.login(ALICE.0).await;
    let mailbox = session.select("INBOX").await.unwrap();
    assert_eq!(mailbox.uid_validity, Some(new));
    assert_eq!(fetch_all(&mut session, "INBOX").await, vec![message("kept")]);
}

#[tokio::test]
async fn dovecot_imaps_is_trusted_through_the_rig_ca() {
    let dovecot = Dovecot::start(&[ALICE]).await;
    dovecot.append(ALICE.0, "INBOX", &message("tls")).await;

    let pem = std::fs::read(dovecot.ca_cert_path()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    for name in ["localhost", "127.0.0.1"] {
        let tcp = TcpStream::connect((HOST, dovecot.imaps_port())).await.unwrap();
        let server_name = rustls::pki_types::ServerName::try_from(name).unwrap();
        let tls = connector.connect(server_name, tcp).await.unwrap();
        let mut client = async_imap::Client::new(tls);
        client.read_response().await.unwrap().unwrap();
        let mut session = client.login(ALICE.0, ALICE.1).await.map_err(|(e, _)| e).unwrap();
        let mailbox = session.select("INBOX").await.unwrap();
        assert_eq!(mailbox.exists, 1, "over TLS as {name}");
    }
}

#[tokio::test]
async fn postgres_fresh_databases_are_separate_and_dropped() {
    let first = fresh_database().await;
    let second = fresh_database().await;
    assert_ne!(first.name(), second.name());

    let mut conn = first.connect().await;
    sqlx::query("CREATE TABLE leads (email TEXT PRIMARY KEY)").execute(&mut conn).await.unwrap();
    sqlx::query("INSERT INTO leads VALUES ('a@example.test')").execute(&mut conn).await.unwrap();
    let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM leads").fetch_one(&mut conn).await.unwrap();
    assert_eq!(count, 1);

    let mut other = second.connect().await;
    let missing = sqlx::query("SELECT * FROM leads").execute(&mut other).await;
    assert!(missing.is_err(), "databases share a table");
    other.close().await.unwrap();

    let name = first.name().to_string();
    assert!(database_exists(&name).await);
    drop(first); // `conn` is still open: the guard drops WITH (FORCE)
    assert!(!database_exists(&name).await, "{name} survived its guard");
}

#[test]
fn free_ports_are_distinct_and_bindable() {
    let ports: Vec<u16> = (0..20).map(|_| free_port()).collect();
    let mut unique = ports.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), ports.len());
    assert!(ports.iter().all(|&p| port_is_free(p)));
}

#[tokio::test]
async fn wait_until_returns_once_the_condition_holds() {
    let mut polls = 0;
    wait_until("the third poll", Duration::from_secs(5), || {
        polls += 1;
        polls == 3
    })
    .await;
    assert_eq!(polls, 3);
}

#[tokio::test]
#[should_panic(expected = "timed out after 50ms waiting for the impossible")]
async fn wait_until_names_what_timed_out() {
    wait_until("the impossible", Duration::from_millis(50), || false).await;
}

#[test]
fn temp_project_lays_out_files_and_a_sqlite_url() {
    let project = TempProject::new();
    let config = project.write_config("[daemon]\n");
    let sequence = project.write_sequence("outbound", "steps = []\n");
    let template = project.write_template("partials/signature", "-- {{rep.name}}\n");

    assert_eq!(config, project.config_path());
    assert_eq!(std::fs::read_to_string(&config).unwrap(), "[daemon]\n");
    assert_eq!(sequence, project.root().join("config/sequences/outbound.toml"));
    assert!(template.ends_with("templates/partials/signature.hbs") && template.exists());
    assert_eq!(project.database_url(), format!("sqlite://{}/cadence.db", project.root().display()));
    assert_eq!(project.cadence().get_current_dir(), Some(project.root()), "cadence runs from the project root");
}
