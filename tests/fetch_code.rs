//! `fargo fetch-code` against a real S3 server, versitygw on a loopback port with a scratch
//! data directory: no Kubernetes. versitygw is built by `tests/cluster/build.sh versitygw`
//! into `$FARGO_CACHE/bin/versitygw-<version>/` when it is not there yet.

mod common;

use std::io::{Cursor, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use common::s3::{ACCESS_KEY, S3Server, SECRET_KEY, Scratch};
use zip::write::SimpleFileOptions;

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Runs `fargo fetch-code` against `server` with `args`.
fn fetch_code(server: &S3Server, args: &[&str], secret: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fargo"))
        .arg("fetch-code")
        .args(args)
        .env("FARGO_S3_ENDPOINT", &server.endpoint)
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

/// A zip of `(name, content, unix mode)`.
fn zip(files: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for (name, content, mode) in files {
        let options = SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(*mode);
        writer.start_file(*name, options).unwrap();
        writer.write_all(content).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// The one line a failure prints: what the pod's termination message will say.
fn failure_line(output: &Output) -> String {
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    stderr.lines().last().unwrap_or_default().to_string()
}

#[tokio::test]
async fn unpacks_code_into_the_task_dir_and_a_layer_into_opt() {
    let scratch = Scratch::new("unpacks");
    let server = S3Server::start(&scratch, LOOPBACK).await;
    server
        .put(
            "fn/code.zip",
            zip(&[
                (
                    "bootstrap",
                    b"#!/bin/sh\nexec python3 -m awslambdaric \"$_HANDLER\"\n",
                    0o644,
                ),
                (
                    "handler.py",
                    b"def handler(event, context): return event\n",
                    0o644,
                ),
                ("lib/deep/util.py", b"X = 1\n", 0o4755),
            ]),
        )
        .await;
    server
        .put(
            "layers/deps.zip",
            zip(&[("python/requests/__init__.py", b"# requests\n", 0o644)]),
        )
        .await;
    let (task, opt) = (scratch.dir("task"), scratch.dir("opt"));

    let output = fetch_code(
        &server,
        &[
            "--into",
            task.to_str().unwrap(),
            "--source",
            "s3:code/fn/code.zip",
            "--opt",
            opt.to_str().unwrap(),
            "--layer",
            "s3://code/layers/deps.zip",
        ],
        SECRET_KEY,
    );

    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        std::fs::read(task.join("handler.py")).unwrap(),
        b"def handler(event, context): return event\n"
    );
    assert_eq!(
        std::fs::read(task.join("lib/deep/util.py")).unwrap(),
        b"X = 1\n"
    );
    assert_eq!(mode(&task.join("bootstrap")), 0o755);
    assert_eq!(mode(&task.join("handler.py")), 0o644);
    // Executable, never setuid.
    assert_eq!(mode(&task.join("lib/deep/util.py")), 0o755);
    assert_eq!(
        std::fs::read(opt.join("python/requests/__init__.py")).unwrap(),
        b"# requests\n"
    );
    assert!(!task.join("python").exists());
}

#[tokio::test]
async fn a_missing_key_fails_naming_the_object_and_the_s3_code() {
    let scratch = Scratch::new("missing");
    let server = S3Server::start(&scratch, LOOPBACK).await;
    let task = scratch.dir("task");

    let output = fetch_code(
        &server,
        &[
            "--into",
            task.to_str().unwrap(),
            "--source",
            "s3:code/nope.zip",
        ],
        SECRET_KEY,
    );

    assert_eq!(
        failure_line(&output),
        "s3://code/nope.zip: 404 NoSuchKey (no object has this key)"
    );
}

#[tokio::test]
async fn refused_credentials_fail_naming_the_variables_to_fix() {
    let scratch = Scratch::new("credentials");
    let server = S3Server::start(&scratch, LOOPBACK).await;
    server
        .put("code.zip", zip(&[("index.js", b"ok", 0o644)]))
        .await;
    let task = scratch.dir("task");

    let output = fetch_code(
        &server,
        &[
            "--into",
            task.to_str().unwrap(),
            "--source",
            "s3:code/code.zip",
        ],
        "not-the-secret",
    );

    let line = failure_line(&output);
    assert!(
        line.starts_with("s3://code/code.zip: 403 ") && line.contains("AWS_SECRET_ACCESS_KEY"),
        "{line}"
    );
    assert!(!task.join("index.js").exists());
}

#[tokio::test]
async fn a_zip_slip_archive_is_refused_with_nothing_written_anywhere() {
    let scratch = Scratch::new("slip");
    let server = S3Server::start(&scratch, LOOPBACK).await;
    server
        .put(
            "evil.zip",
            zip(&[
                ("index.js", b"ok", 0o644),
                ("../../escaped", b"owned", 0o644),
            ]),
        )
        .await;
    let task = scratch.dir("deep/task");

    let output = fetch_code(
        &server,
        &[
            "--into",
            task.to_str().unwrap(),
            "--source",
            "s3:code/evil.zip",
        ],
        SECRET_KEY,
    );

    assert_eq!(
        failure_line(&output),
        format!(
            "s3://code/evil.zip: entry ../../escaped escapes {}",
            task.display()
        )
    );
    assert!(!scratch.0.join("escaped").exists());
    assert!(!scratch.0.join("deep/escaped").exists());
    assert_eq!(std::fs::read_dir(&task).unwrap().count(), 0);
}

#[tokio::test]
async fn a_zip_over_the_download_limit_is_refused() {
    let scratch = Scratch::new("large");
    let server = S3Server::start(&scratch, LOOPBACK).await;
    server
        .put("big.zip", zip(&[("blob", &[7u8; 4096], 0o644)]))
        .await;
    let task = scratch.dir("task");

    let output = fetch_code(
        &server,
        &[
            "--into",
            task.to_str().unwrap(),
            "--source",
            "s3:code/big.zip",
            "--max-zip-bytes",
            "100",
        ],
        SECRET_KEY,
    );

    assert_eq!(
        failure_line(&output),
        "s3://code/big.zip: the zip is larger than --max-zip-bytes (100 bytes, Lambda's 50 MiB)"
    );
}
