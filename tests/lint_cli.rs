//! The `lint` subcommand, run as a process.

use std::process::Command;

fn lint(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sip-cpim-gateway"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("lint")
        .args(args)
        .output()
        .expect("run binary");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
    )
}

#[test]
fn valid_files_exit_zero_with_one_line_each() {
    let (code, out) = lint(&[
        "fixtures/seed-flows/10.1-F1-SUBSCRIBE.sip",
        "fixtures/seed-flows/publish-M3-NOTIFY.sip",
    ]);
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2);
    assert!(
        lines[0].contains(": OK SUBSCRIBE sip:presentity@pres.example.com SIP/2.0"),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].contains("CSeq: 1 SUBSCRIBE")
            && lines[0].contains("Event: presence")
            && lines[0].contains("Expires: 600")
    );
    assert!(
        lines[1].contains("Subscription-State: active;expires=3599"),
        "{}",
        lines[1]
    );
    assert!(
        lines[1].contains("Content-Type: application/cpim-pidf+xml")
            && lines[1].contains("body: 432 bytes")
    );
}

#[test]
fn an_invalid_file_fails_the_run_and_names_the_fault() {
    let (code, out) = lint(&[
        "fixtures/seed-flows/10.1-F1-SUBSCRIBE.sip",
        "../shared/corpus/rfc4475/quotbal.dat",
    ]);
    assert_eq!(code, 1);
    let bad = out.lines().nth(1).unwrap();
    assert!(bad.contains("ERROR malformed To header at offset"), "{bad}");
    assert!(
        bad.contains("unterminated quoted string") && bad.ends_with("(a UAS answers 400)"),
        "{bad}"
    );
}

#[test]
fn json_output() {
    let (code, out) = lint(&[
        "--json",
        "../shared/corpus/rfc4475/badvers.dat",
        "fixtures/seed-flows/10.2-F1-REGISTER.sip",
    ]);
    assert_eq!(code, 1);
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows[0]["valid"], false);
    assert_eq!(rows[0]["fault"]["status"], 505);
    assert_eq!(rows[1]["valid"], true);
    assert_eq!(rows[1]["message"]["cseq"], "1 REGISTER");
    assert_eq!(rows[1]["message"]["to"]["uri"], "sip:resource@example.com");
    assert_eq!(
        rows[1]["message"]["via"][0]["sent_by"],
        "pua.example.com:5060"
    );
}
