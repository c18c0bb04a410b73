//! Certificates for the end-to-end tests of HTTPS (shared by the test files that `mod tls;`).

use std::path::{Path, PathBuf};

use pkgchain_tests_nixpkgs::HttpServer;

/// Serves `served` over HTTPS as a private server does: its certificate is signed by an
/// authority made for the test (`tls/ca.pem` under `input`), and every request needs the
/// basic login that `tls/netrc` gives for 127.0.0.1 (`tls/other-netrc` names another host
/// only). Returns the server and its log ("STATUS PATH" per request).
pub fn serve_privately(input: &Path, served: &Path) -> (HttpServer, PathBuf) {
    make_certificates(input);
    let dir = input.join("tls");
    std::fs::write(
        dir.join("netrc"),
        "machine 127.0.0.1\n  login nix-user\n  password \"secret words\"\n",
    )
    .expect("netrc");
    std::fs::write(
        dir.join("other-netrc"),
        "machine cache.example.org login a password b\n",
    )
    .expect("netrc");
    let log = dir.join("server.log");
    let server = HttpServer::start_tls(
        served,
        &dir.join("cert.pem"),
        &dir.join("key.pem"),
        Some("nix-user:secret words"),
        &log,
    );
    (server, log)
}

/// A certificate authority made for one test, and a certificate it signed for 127.0.0.1:
/// `tls/ca.pem`, `tls/cert.pem` and `tls/key.pem` under `input`.
pub fn make_certificates(input: &Path) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let dir = input.join("tls");
    std::fs::create_dir_all(&dir).expect("tls dir");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "pkgchain e2e test authority");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().expect("key");
    let ca_cert = ca.self_signed(&ca_key).expect("ca");
    let issuer = Issuer::new(ca, ca_key);
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("params");
    leaf.distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    leaf.use_authority_key_identifier_extension = true;
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = KeyPair::generate().expect("key");
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).expect("leaf");
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).expect("ca.pem");
    std::fs::write(dir.join("cert.pem"), leaf_cert.pem()).expect("cert.pem");
    std::fs::write(dir.join("key.pem"), leaf_key.serialize_pem()).expect("key.pem");
}
