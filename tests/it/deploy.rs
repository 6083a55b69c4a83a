//! Installing and running cadence the way it is deployed: `cadence init`
//! outside the repository, completions and man pages from the real flags,
//! the systemd unit, DKIM signatures checked by an independent verifier
//! (dkimpy), JSON logs and error messages that say what to do.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use clap::CommandFactory;
use serde_json::Value;

use crate::fixtures::{text, Daemon, Opts, Project, SECRET};
use crate::support::smtp::{SmtpOptions, SmtpServer};
use crate::support::SETTLE;
use crate::support::{cadence, wait_until_blocking};

/// Monday 2026-12-14 15:00 UTC: inside every send window used here.
const MONDAY: &str = "2026-12-14T15:00:00Z";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = cadence();
    cmd.current_dir(dir).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run cadence")
}

fn ok_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = run_in(dir, args, env);
    assert!(
        out.status.success(),
        "cadence {args:?} failed ({:?}):\nstdout: {}\nstderr: {}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Relative paths of every file under `dir`, sorted.
fn files_under(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("read {}: {e}", d.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.insert(path.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out
}

/// Starts `cadence ARGS` in the background (stdout and stderr to a log).
fn spawn(dir: &Path, args: &[&str], env: &[(&str, &str)], log: PathBuf) -> Daemon {
    let file = std::fs::File::create(&log).expect("log file");
    let mut cmd = cadence();
    cmd.current_dir(dir).args(args).stdin(Stdio::null()).stdout(file.try_clone().unwrap()).stderr(file);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Daemon { child: cmd.spawn().expect("spawn cadence"), log }
}

/// The daemon's life as a service manager sees it: started, reloaded with
/// SIGHUP, stopped with SIGTERM (exit 0). Returns the log.
fn start_reload_stop(daemon: Daemon) -> String {
    wait_until_blocking("cadence run to listen", SETTLE, || daemon.log().contains("http listening"));
    daemon.signal("HUP");
    wait_until_blocking("the SIGHUP reload", SETTLE, || daemon.log().contains("SIGHUP: config and templates reloaded"));
    let log_path = daemon.log.clone();
    let status = daemon.terminate(SETTLE);
    let log = std::fs::read_to_string(log_path).unwrap();
    assert!(status.success(), "exit 0 on SIGTERM, got {status:?}:\n{log}");
    assert!(log.contains("cadence stopped"), "{log}");
    log
}

/// `cadence init DIR` from a folder far from the repository, then `check`,
/// a first email through the example sequence, and `cadence run` started,
/// reloaded and stopped: what a `cargo install`ed binary does on a server.
#[test]
fn init_makes_a_project_that_checks_sends_and_runs_outside_the_repository() {
    let tmp = tempfile::Builder::new().prefix("cadence-init-").tempdir().unwrap();
    assert!(!tmp.path().starts_with(repo()), "the test must run outside the repository");
    let out = ok_in(tmp.path(), &["init", "sales"], &[]);
    let project = tmp.path().join("sales");
    assert!(project.join("config/cadence.toml").is_file(), "{out}");
    let lines: Vec<&str> = out.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let next = &lines[lines.len() - 3..];
    assert_eq!(next[0], "cd sales", "{out}");
    assert!(next[1].starts_with("export CADENCE_SECRET="), "{out}");
    assert_eq!(next[2], "cadence check && cadence run", "{out}");

    // `cadence check` passes on the fresh project (warnings only).
    let check = ok_in(&project, &["check"], &[]);
    assert!(check.contains("config/cadence.toml: ok"), "{check}");

    // The example sequence sends its first email into outbox/.
    let secret = [("CADENCE_SECRET", SECRET)];
    ok_in(
        &project,
        &[
            "enroll",
            "ana@acme.example",
            "--sequence",
            "cold-outreach",
            "--first-name",
            "Ana",
            "--company",
            "Acme",
            "--timezone",
            "America/New_York",
            "--now",
            MONDAY,
        ],
        &[],
    );
    ok_in(&project, &["tick", "--now", MONDAY], &secret);
    let outbox: Vec<PathBuf> = std::fs::read_dir(project.join("outbox")).expect("outbox/ created").map(|e| e.unwrap().path()).collect();
    assert_eq!(outbox.len(), 1, "{outbox:?}");
    let eml = std::fs::read_to_string(&outbox[0]).unwrap();
    assert!(eml.contains("To: Ana <ana@acme.example>") && eml.contains("List-Unsubscribe:"), "{eml}");
    assert!(project.join("cadence.db").is_file(), "the database lives in the project, not in the working directory of a test");

    // `cadence run` in the project: listens, reloads on SIGHUP, stops on SIGTERM.
    let daemon =
        spawn(&project, &["run"], &[("CADENCE_SECRET", SECRET), ("CADENCE_HTTP_LISTEN", "127.0.0.1:0")], tmp.path().join("run.log"));
    let log = start_reload_stop(daemon);
    assert!(log.contains("cadence started"), "{log}");
    assert!(!log.contains('\u{1b}'), "no colour codes when stderr is not a terminal (journald, log files):\n{log}");
}

/// The files `init` writes are the shipped example, file for file; a second
/// `init` keeps every existing file and only restores missing ones.
#[test]
fn init_writes_the_shipped_example_and_never_overwrites() {
    let tmp = tempfile::tempdir().unwrap();
    ok_in(tmp.path(), &["init", "p"], &[]);
    let p = tmp.path().join("p");
    for sub in ["config", "templates"] {
        let shipped = files_under(&repo().join(sub));
        let written = files_under(&p.join(sub));
        assert_eq!(written, shipped, "init must write exactly the shipped {sub}/ (add new files to cli::init::STARTER_FILES)");
        for f in &shipped {
            assert_eq!(
                std::fs::read(p.join(sub).join(f)).unwrap(),
                std::fs::read(repo().join(sub).join(f)).unwrap(),
                "{sub}/{}",
                f.display()
            );
        }
    }

    let edited = "# mine\n";
    std::fs::write(p.join("config/cadence.toml"), edited).unwrap();
    std::fs::remove_file(p.join("templates/bump.hbs")).unwrap();
    let out = ok_in(&p, &["init"], &[]);
    assert_eq!(std::fs::read_to_string(p.join("config/cadence.toml")).unwrap(), edited, "an existing file is never overwritten");
    assert!(out.contains("kept") && out.contains("config/cadence.toml (exists; not overwritten)"), "{out}");
    assert!(out.lines().any(|l| l.starts_with("created") && l.ends_with("templates/bump.hbs")), "{out}");
    assert!(p.join("templates/bump.hbs").is_file());
    assert!(out.contains("\n  cadence check\n  cadence run\n"), "in the project itself the three commands need no cd:\n{out}");

    // A file where the folder should be: refused, with what to do.
    std::fs::write(tmp.path().join("afile"), "x").unwrap();
    let out = run_in(tmp.path(), &["init", "afile"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("is not a folder: pick another place"), "{}", text(&out.stderr));
}

/// Every subcommand and flag of the clap definition is in the completion
/// scripts and the man page; the bash script parses.
#[test]
fn completions_and_man_pages_come_from_the_clap_definitions() {
    let cmd = cadence::cli::Cli::command();
    let subcommands: Vec<String> = cmd.get_subcommands().map(|s| s.get_name().to_string()).collect();
    assert!(subcommands.iter().any(|s| s == "init") && subcommands.iter().any(|s| s == "man"), "{subcommands:?}");
    let mut flags: BTreeSet<String> = cmd.get_arguments().filter_map(|a| a.get_long()).map(|l| format!("--{l}")).collect();
    for s in cmd.get_subcommands() {
        flags.extend(s.get_arguments().filter_map(|a| a.get_long()).map(|l| format!("--{l}")));
    }
    assert!(flags.contains("--log-format") && flags.contains("--sequence"), "{flags:?}");

    let tmp = tempfile::tempdir().unwrap();
    let mut checked = Vec::new();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let script = ok_in(tmp.path(), &["completions", shell], &[]);
        assert!(script.len() > 500, "{shell}: {script}");
        if matches!(shell, "bash" | "zsh" | "fish") {
            for s in &subcommands {
                assert!(script.contains(s.as_str()), "{shell} completion lacks subcommand {s}");
            }
        }
        if shell == "bash" {
            for f in &flags {
                assert!(script.contains(f.as_str()), "bash completion lacks {f}");
            }
        }
        // A syntax check by the shell itself, where it is installed.
        let file = tmp.path().join(format!("cadence.{shell}"));
        std::fs::write(&file, &script).unwrap();
        let noexec = match shell {
            "bash" | "zsh" | "fish" => Some(shell),
            _ => None,
        };
        if let Some(sh) = noexec {
            match Command::new(sh).arg("-n").arg(&file).output() {
                Ok(out) => {
                    assert!(out.status.success(), "{sh} -n rejects the completion script: {}", text(&out.stderr));
                    checked.push(format!("{sh} -n"));
                }
                Err(_) => checked.push(format!("{sh} not installed: its script checked for names only")),
            }
        }
    }
    assert!(checked.iter().any(|c| c == "bash -n"), "bash is needed to check the bash completion: {checked:?}");
    eprintln!("completion scripts checked: {}", checked.join("; "));

    let bad = run_in(tmp.path(), &["completions", "tcsh"], &[]);
    assert_eq!(bad.status.code(), Some(2), "an unknown shell is a usage error");
    assert!(text(&bad.stderr).contains("possible values"), "{}", text(&bad.stderr));

    let page = ok_in(tmp.path(), &["man"], &[]);
    assert!(page.starts_with(".ie") || page.contains(".TH cadence 1"), "{page}");
    assert!(page.contains(".TH cadence 1"), "{page}");
    for s in &subcommands {
        assert!(page.contains(&format!("cadence\\-{}", s.replace('-', "\\-"))) || page.contains(s.as_str()), "man page lacks {s}");
    }
    assert!(page.contains("\\-\\-log\\-format"), "global flags are in the page");

    let dir = tmp.path().join("man1");
    ok_in(tmp.path(), &["man", "--dir", dir.to_str().unwrap()], &[]);
    assert!(dir.join("cadence.1").is_file());
    for s in &subcommands {
        let sub = dir.join(format!("cadence-{s}.1"));
        assert!(sub.is_file(), "no page {}", sub.display());
    }
    let enroll = std::fs::read_to_string(dir.join("cadence-enroll.1")).unwrap();
    assert!(enroll.contains("\\-\\-sequence"), "{enroll}");
}

/// `[section] key=value` lines of a unit file; repeated keys keep every value.
fn unit_keys(unit: &str) -> BTreeMap<(String, String), Vec<String>> {
    let mut out: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let mut section = String::new();
    for (n, line) in unit.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.to_string();
            continue;
        }
        let (k, v) = line.split_once('=').unwrap_or_else(|| panic!("line {}: not key=value: {line}", n + 1));
        assert!(!section.is_empty(), "line {}: key outside a section", n + 1);
        out.entry((section.clone(), k.trim().to_string())).or_default().push(v.trim().to_string());
    }
    out
}

fn seconds(v: &str) -> u64 {
    let v = v.trim();
    if let Some(n) = v.strip_suffix("min") {
        n.trim().parse::<u64>().unwrap() * 60
    } else if let Some(n) = v.strip_suffix('s') {
        n.trim().parse().unwrap()
    } else {
        v.parse().unwrap()
    }
}

/// The unit in contrib/ has the hardening and the stop/reload behaviour the
/// README promises, `systemd-analyze verify` accepts it (where installed),
/// and the daemon runs the way the unit starts it.
#[test]
fn the_systemd_unit_is_valid_hardened_and_runs_the_daemon() {
    let unit = std::fs::read_to_string(repo().join("contrib/cadence.service")).expect("contrib/cadence.service");
    let keys = unit_keys(&unit);
    let one = |section: &str, key: &str| -> String {
        let v = keys.get(&(section.to_string(), key.to_string())).unwrap_or_else(|| panic!("[{section}] {key}= missing"));
        v.last().unwrap().clone()
    };
    let all = |section: &str, key: &str| keys.get(&(section.to_string(), key.to_string())).cloned().unwrap_or_default();
    for (key, want) in [
        ("DynamicUser", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("NoNewPrivileges", "yes"),
        ("StateDirectory", "cadence"),
        ("KillSignal", "SIGTERM"),
        ("CapabilityBoundingSet", ""),
    ] {
        assert_eq!(one("Service", key), want, "[Service] {key}");
    }
    assert!(one("Service", "ExecReload").contains("-HUP $MAINPID"), "reload is SIGHUP");
    let exec = one("Service", "ExecStart");
    assert!(exec.starts_with("/usr/local/bin/cadence ") && exec.ends_with(" run") && exec.contains("--config /etc/cadence/"), "{exec}");
    // cadence waits 60 s for in-flight sends (engine::daemon::GRACE).
    assert!(seconds(&one("Service", "TimeoutStopSec")) > 60, "TimeoutStopSec must exceed cadence's 60 s grace");
    assert!(one("Service", "EnvironmentFile").starts_with("/etc/cadence/"), "secrets come from an environment file");
    let env = all("Service", "Environment");
    let db = env.iter().find_map(|e| e.strip_prefix("CADENCE_DATABASE_URL=")).expect("the database is placed in the StateDirectory");
    assert_eq!(db, "sqlite:///var/lib/cadence/cadence.db");
    assert_eq!(one("Install", "WantedBy"), "multi-user.target");
    let mut checked = vec!["keys parsed and hardening asserted".to_string()];

    // systemd's own checker, on a copy whose ExecStart is the binary under
    // test (verify insists that the executable exists).
    let tmp = tempfile::tempdir().unwrap();
    match Command::new("systemd-analyze").arg("--version").output() {
        Ok(_) => {
            let copy = tmp.path().join("cadence.service");
            std::fs::write(&copy, unit.replace("/usr/local/bin/cadence", env!("CARGO_BIN_EXE_cadence"))).unwrap();
            let out = Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(&copy).output().expect("systemd-analyze");
            let stderr = text(&out.stderr);
            // Unknown keys and bad values are only warnings (exit 0): any
            // line naming the unit fails the test.
            let about_unit: Vec<&str> = stderr.lines().filter(|l| l.contains("cadence.service")).collect();
            assert!(out.status.success() && about_unit.is_empty(), "systemd-analyze verify:\n{stderr}");
            if !stderr.trim().is_empty() {
                eprintln!("systemd-analyze verify said (not about the unit):\n{stderr}");
            }
            checked.push("systemd-analyze verify passed with no warning".into());
        }
        Err(_) => checked.push("systemd-analyze is not installed: the unit was checked by the key parser only".into()),
    }
    eprintln!("contrib/cadence.service: {}", checked.join("; "));

    // As the unit runs it: config elsewhere, working directory = state
    // directory, database from the Environment= line.
    let etc = tmp.path().join("etc-cadence");
    ok_in(tmp.path(), &["init", etc.to_str().unwrap()], &[]);
    let state = tmp.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let config = etc.join("config/cadence.toml");
    let db = format!("sqlite://{}/cadence.db", state.display());
    let args: Vec<&str> = exec.split_whitespace().skip(1).collect();
    let args: Vec<String> =
        args.iter().map(|a| if a.starts_with("/etc/cadence/") { config.display().to_string() } else { a.to_string() }).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let daemon = spawn(
        &state,
        &args,
        &[("CADENCE_SECRET", SECRET), ("CADENCE_DATABASE_URL", &db), ("CADENCE_HTTP_LISTEN", "127.0.0.1:0"), ("RUST_LOG", "info")],
        tmp.path().join("unit.log"),
    );
    start_reload_stop(daemon);
    assert!(state.join("cadence.db").is_file(), "the database is in the state directory");
    assert!(!etc.join("cadence.db").exists(), "nothing is written next to the config");
}

/// A key pair made by openssl: the PEM private key and the `p=` of its DNS record.
struct TestKey {
    pem: String,
    record: String,
}

fn openssl(args: &[&str], dir: &Path) -> Vec<u8> {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl (scripts/test installs it)");
    assert!(out.status.success(), "openssl {args:?}: {}", text(&out.stderr));
    out.stdout
}

fn make_key(dir: &Path, kind: &str) -> TestKey {
    use base64::Engine as _;
    let file = format!("{kind}.pem");
    match kind {
        "rsa" => openssl(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", &file], dir),
        _ => openssl(&["genpkey", "-algorithm", "ed25519", "-out", &file], dir),
    };
    let spki = openssl(&["pkey", "-in", &file, "-pubout", "-outform", "DER"], dir);
    let b64 = base64::engine::general_purpose::STANDARD;
    let record = match kind {
        "rsa" => format!("v=DKIM1; k=rsa; p={}", b64.encode(&spki)),
        // RFC 8463: the bare 32-byte key, not the SubjectPublicKeyInfo.
        _ => format!("v=DKIM1; k=ed25519; p={}", b64.encode(&spki[spki.len() - 32..])),
    };
    TestKey { pem: std::fs::read_to_string(dir.join(&file)).unwrap(), record }
}

const VERIFY_PY: &str = r#"
import logging, sys
import dkim
message = open(sys.argv[1], 'rb').read()
record = open(sys.argv[2], 'rb').read().strip()
expected = sys.argv[3].encode()
asked = []
def dnsfunc(name, timeout=5):
    name = name if isinstance(name, bytes) else name.encode()
    asked.append(name)
    return record if name.rstrip(b'.') == expected else None
logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
ok = dkim.verify(message, logger=logging.getLogger('dkim'), dnsfunc=dnsfunc)
print('asked', [a.decode() for a in asked])
print('pass' if ok else 'fail')
sys.exit(0 if ok else 1)
"#;

/// Runs dkimpy on `raw`, answering the DNS query for `name` with `record`.
fn dkimpy_verifies(dir: &Path, raw: &[u8], record: &str, name: &str) -> (bool, String) {
    let script = dir.join("verify.py");
    std::fs::write(&script, VERIFY_PY).unwrap();
    let msg = dir.join("message.eml");
    std::fs::write(&msg, raw).unwrap();
    let rec = dir.join("record.txt");
    std::fs::write(&rec, record).unwrap();
    let out = Command::new("/usr/bin/python3").arg(&script).arg(&msg).arg(&rec).arg(name).output().expect("python3");
    let report = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        !report.contains("ModuleNotFoundError"),
        "python3-dkim is missing: apt-get install python3-dkim (scripts/test installs it)\n{report}"
    );
    (out.status.success(), report)
}

/// A message sent over SMTP carries a DKIM signature that dkimpy verifies
/// against the public key in a test DNS answer; a changed byte breaks it.
/// RSA (PKCS#8 file, `[reps.dkim]`, multipart) and Ed25519 (key in a
/// variable, the per-domain `[[dkim]]`).
#[test]
fn dkim_signatures_verify_with_an_independent_verifier() {
    struct Case {
        kind: &'static str,
        config: &'static str,
        env: bool,
        html: bool,
    }
    let cases = [
        Case {
            kind: "rsa",
            config: "\n  [reps.dkim]\n  domain = \"vendor.test\"\n  selector = \"sel1\"\n  private_key_file = \"secrets/dkim.pem\"\n",
            env: false,
            html: true,
        },
        Case {
            kind: "ed25519",
            config: "\n[[dkim]]\ndomain = \"vendor.test\"\nselector = \"sel1\"\nprivate_key_env = \"CADENCE_DKIM_KEY\"\n",
            env: true,
            html: false,
        },
    ];
    for case in cases {
        let server = SmtpServer::start(SmtpOptions::default());
        let p = Project::new(Opts { smtp_port: Some(server.port()), ..Opts::default() });
        let key = make_key(p.tmp.root(), case.kind);
        p.tmp.write("secrets/dkim.pem", &key.pem);
        let config = std::fs::read_to_string(p.tmp.config_path()).unwrap();
        p.tmp.write_config(&format!("{config}{}", case.config));
        if case.html {
            p.tmp.write_template("intro.html", "<p>Hi {{default first_name \"there\"}},</p>\n<p>step {{step}} for {{company}}</p>\n");
        }
        let env: Vec<(&str, &str)> = if case.env { vec![("CADENCE_DKIM_KEY", key.pem.as_str())] } else { vec![] };

        let mut check = p.tmp.cadence();
        check.env("CADENCE_SECRET", SECRET).args(["check"]);
        for (k, v) in &env {
            check.env(k, v);
        }
        let out = check.output().unwrap();
        assert!(out.status.success(), "{}: check: {}{}", case.kind, text(&out.stdout), text(&out.stderr));
        assert!(!text(&out.stdout).contains("dkim"), "{}: a good key draws no warning: {}", case.kind, text(&out.stdout));

        // Non-ASCII and long enough to be encoded and folded in headers.
        p.ok(&[
            "enroll",
            "zoe@acme.example",
            "--sequence",
            "outreach",
            "--first-name",
            "Zoë",
            "--last-name",
            "Müller-Lüdenscheidt",
            "--company",
            "Café de la Société Générale des Transports Internationaux Européens",
            "--timezone",
            "UTC",
            "--now",
            MONDAY,
        ]);
        let mut tick = p.tmp.cadence();
        tick.env("CADENCE_SECRET", SECRET).args(["tick", "--now", MONDAY, "--json"]);
        for (k, v) in &env {
            tick.env(k, v);
        }
        let out = tick.output().unwrap();
        assert!(out.status.success(), "{}: tick: {}", case.kind, text(&out.stderr));
        let got = server.wait_for(1, SETTLE);
        let msg = &got[0];
        let sig = msg.header("DKIM-Signature").unwrap_or_else(|| panic!("{}: no DKIM-Signature:\n{}", case.kind, text(&msg.raw)));
        let algo = if case.kind == "rsa" { "a=rsa-sha256" } else { "a=ed25519-sha256" };
        assert!(sig.contains(algo) && sig.contains("d=vendor.test") && sig.contains("s=sel1"), "{sig}");
        let signed = sig.split("h=").nth(1).unwrap().split(';').next().unwrap().to_ascii_lowercase();
        for h in ["from", "to", "subject", "date", "message-id", "list-unsubscribe", "list-unsubscribe-post"] {
            assert!(signed.split(':').any(|s| s.trim() == h), "{h} is not signed: h={signed}");
        }
        if case.html {
            assert!(text(&msg.raw).contains("multipart/alternative"), "the multipart case is multipart");
        }

        let dir = tempfile::tempdir().unwrap();
        let (ok, report) = dkimpy_verifies(dir.path(), &msg.raw, &key.record, "sel1._domainkey.vendor.test");
        assert!(ok, "{}: dkimpy does not verify the signature:\n{report}\n--- message ---\n{}", case.kind, text(&msg.raw));
        assert!(report.contains("sel1._domainkey.vendor.test"), "the verifier looked the key up: {report}");

        // The verifier is not a rubber stamp: one changed body byte fails.
        let mut tampered = msg.raw.clone();
        let body_at = tampered.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let i = tampered[body_at..].iter().position(|b| b.is_ascii_alphabetic()).unwrap() + body_at;
        tampered[i] ^= 0x20;
        let (ok, report) = dkimpy_verifies(dir.path(), &tampered, &key.record, "sel1._domainkey.vendor.test");
        assert!(!ok, "{}: a tampered message verified:\n{report}", case.kind);
    }
}

/// `cadence check` refuses a DKIM key that cannot sign, naming the file.
#[test]
fn check_names_an_unusable_dkim_key() {
    let p = Project::file();
    p.tmp.write("secrets/dkim.pem", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n");
    let config = std::fs::read_to_string(p.tmp.config_path()).unwrap();
    p.tmp.write_config(&format!(
        "{config}\n  [reps.dkim]\n  domain = \"vendor.test\"\n  selector = \"s1\"\n  private_key_file = \"secrets/dkim.pem\"\n"
    ));
    let out = p.run(&["check"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    let line = stdout.lines().find(|l| l.contains("reps[0].dkim.private_key_file")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(line.starts_with("error:") && line.contains("secrets/dkim.pem") && line.contains("not a private key"), "{line}");

    // The same in a variable: the variable is named, its value never shown.
    p.tmp.write_config(&format!(
        "{config}\n  [reps.dkim]\n  domain = \"vendor.test\"\n  selector = \"s1\"\n  private_key_env = \"CADENCE_DKIM_KEY\"\n"
    ));
    let unset = p.run(&["check"]);
    assert!(unset.status.success(), "an unset key variable is a warning: {}", text(&unset.stdout));
    assert!(text(&unset.stdout).contains("warning") && text(&unset.stdout).contains("CADENCE_DKIM_KEY"));
    let mut cmd = p.tmp.cadence();
    let out = cmd.env("CADENCE_DKIM_KEY", "not-a-key-but-secret").arg("check").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("CADENCE_DKIM_KEY does not hold a usable DKIM key") && !stdout.contains("not-a-key-but-secret"), "{stdout}");
}

fn json_lines(stderr: &str) -> Vec<Value> {
    stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {l}\n--- stderr ---\n{stderr}"))
        })
        .collect()
}

/// `--log-format json`: one object per stderr line with `timestamp`,
/// `level`, `target`, `message` and the event's fields at the top level;
/// `RUST_LOG` filters; errors are JSON too; a bad filter is reported.
#[test]
fn json_logs_have_stable_fields_and_rust_log_filters() {
    let p = Project::file();
    p.enroll("ana@acme.example", "UTC", MONDAY);
    let mut cmd = p.tmp.cadence();
    let out =
        cmd.env("CADENCE_SECRET", SECRET).env("RUST_LOG", "info").args(["--log-format", "json", "tick", "--now", MONDAY]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines = json_lines(&text(&out.stderr));
    assert!(!lines.is_empty(), "RUST_LOG=info logs the tick");
    for l in &lines {
        for key in ["timestamp", "level", "target", "message"] {
            assert!(l[key].is_string(), "`{key}` missing or not a string in {l}");
        }
        assert!(l.get("fields").is_none() && l.get("span").is_none(), "fields are flattened, no span noise: {l}");
    }
    let done = lines.iter().find(|l| l["message"] == "tick done").unwrap_or_else(|| panic!("{lines:?}"));
    assert_eq!(done["level"], "INFO");
    assert_eq!(done["sent"], 1, "{done}");
    assert!(done["target"].as_str().unwrap().starts_with("cadence"), "{done}");

    // RUST_LOG=warn: no info lines.
    p.enroll("bob@beta.example", "UTC", MONDAY);
    let mut cmd = p.tmp.cadence();
    let out =
        cmd.env("CADENCE_SECRET", SECRET).env("RUST_LOG", "warn").args(["--log-format", "json", "tick", "--now", MONDAY]).output().unwrap();
    assert!(out.status.success());
    let lines = json_lines(&text(&out.stderr));
    assert!(lines.iter().all(|l| l["level"] != "INFO"), "RUST_LOG=warn lets info through: {lines:?}");
    assert_eq!(p.outbox().len(), 2, "the second tick did send");

    // A failure in JSON mode is a JSON error line with the exit code and
    // what to do.
    let mut cmd = p.tmp.cadence();
    let out = cmd.args(["--log-format", "json", "tick", "--now", MONDAY]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let lines = json_lines(&text(&out.stderr));
    let err = lines.iter().find(|l| l["level"] == "ERROR").unwrap_or_else(|| panic!("{lines:?}"));
    assert_eq!(err["exit_code"], 1);
    let msg = err["message"].as_str().unwrap();
    assert!(msg.contains("CADENCE_SECRET") && msg.contains("openssl rand"), "{msg}");

    // A filter that does not parse is reported, not silently ignored.
    let mut cmd = p.tmp.cadence();
    let out = cmd.env("RUST_LOG", "cadence=loud").arg("leads").output().unwrap();
    assert!(out.status.success());
    assert!(text(&out.stderr).contains("RUST_LOG=\"cadence=loud\" is not a valid filter"), "{}", text(&out.stderr));
}

/// Mistakes a user can make get a message that says what to do next.
#[test]
fn user_errors_say_what_to_do_next() {
    let empty = tempfile::tempdir().unwrap();
    let out = run_in(empty.path(), &["check"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("create a project with `cadence init`"), "{}", text(&out.stdout));

    let p = Project::file();
    let out = p.run(&["--database", "sqlite:///nonexistent-folder-for-cadence/x.db", "leads"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("the folder /nonexistent-folder-for-cadence does not exist"), "{}", text(&out.stderr));

    let out = p.run(&["--database", "mysql://x", "leads"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("neither sqlite:// nor postgres://") && text(&out.stderr).contains("e.g. sqlite://cadence.db"),
        "{}",
        text(&out.stderr)
    );

    let out = p.run(&["enroll", "a@b.example", "--sequense", "outreach"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("--sequense") && stderr.contains("--help"), "{stderr}");

    // The HTTP port taken by someone else.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut cmd = p.tmp.cadence();
    let out = cmd.env("CADENCE_SECRET", SECRET).env("CADENCE_HTTP_LISTEN", &addr).arg("run").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("CADENCE_HTTP_LISTEN"), "{}", text(&out.stderr));
}
