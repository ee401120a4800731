//! `sip-cpim-gateway check-config`, run as a process.

mod support;

use std::process::Command;
use support::TempDir;

fn check(text: &str) -> (i32, String) {
    let dir = TempDir::new("cfg");
    let path = dir.0.join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sip-cpim-gateway"))
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (
        out.status.code().unwrap_or(-1),
        text.replace(&path.display().to_string(), "gateway.toml"),
    )
}

#[test]
fn the_bundled_file_is_valid() {
    let out = Command::new(env!("CARGO_BIN_EXE_sip-cpim-gateway"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["check-config", "gateway.toml"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn typo_bad_address_and_missing_certificate_name_their_lines() {
    let (code, out) = check("[sip]\nlisten = [\"udp:127.0.0.1:5060\"]\nlocal_domain = [\"x\"]\n");
    assert_eq!(code, 1);
    assert!(
        out.contains("gateway.toml:3:") && out.contains("local_domain"),
        "{out}"
    );
    let (code, out) = check("[sip]\nlisten = [\"udp:999.0.0.1:5060\"]\n");
    assert_eq!(code, 1);
    assert!(
        out.contains("gateway.toml:2: sip.listen:") && out.contains("not an IP address"),
        "{out}"
    );
    let (code, out) = check(
        "[sip]\nlisten = [\"tls:127.0.0.1:5061\"]\n\n[sip.tls]\ncert = \"/no/such/cert.pem\"\nkey = \"/no/such/key.pem\"\n",
    );
    assert_eq!(code, 1);
    assert!(
        out.contains("gateway.toml:5: sip.tls.cert: \"/no/such/cert.pem\" does not exist"),
        "{out}"
    );
    assert!(out.contains("gateway.toml:6: sip.tls.key:"), "{out}");
}
