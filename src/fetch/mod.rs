//! `fargo fetch-code`: the init container of handler functions. It fills `/var/task` with the
//! function's code and `/opt` with its layers, in order (later over earlier, as Lambda layers),
//! from mounted ConfigMaps ([`unpack::copy_directory`]) and zips in S3 ([`s3`],
//! [`unpack::unzip`]), then exits. Any failure ends it with one line, `<source>: <reason>`,
//! which becomes the pod's termination message and so the function's Ready condition.
//!
//! The zips and the bucket are the tenant's: [`entry`] holds the checks (paths, links, sizes,
//! modes), pure and tested on their own.

pub mod entry;
pub mod s3;
pub mod source;
pub mod unpack;

use std::path::{Path, PathBuf};

pub use s3::S3Config;
pub use source::Source;

use entry::Budget;

/// Lambda's limit on a zip uploaded directly.
pub const DEFAULT_MAX_ZIP_BYTES: u64 = 50 * 1024 * 1024;
/// Lambda's limit on code and layers unpacked, together.
pub const DEFAULT_MAX_UNPACKED_BYTES: u64 = 250 * 1024 * 1024;
/// Entries one zip may hold: generous for node_modules, small enough to refuse an archive
/// built to exhaust inodes.
pub const DEFAULT_MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Clone)]
pub struct Config {
    /// Where the code goes (`/var/task`).
    pub task_dir: PathBuf,
    pub sources: Vec<Source>,
    /// Where layers go (`/opt`).
    pub opt_dir: PathBuf,
    pub layers: Vec<Source>,
    /// None when no S3 endpoint is configured: S3 sources then fail with that reason.
    pub s3: Option<S3Config>,
    pub max_unpacked_bytes: u64,
    pub max_entries: usize,
}

/// A failure, as the termination message reads: the source, then the reason.
#[derive(Debug, thiserror::Error)]
#[error("{origin}: {problem}")]
pub struct Error {
    pub origin: String,
    pub problem: Problem,
}

/// What went wrong with one source.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error("entry {entry} escapes {root}")]
    Escapes { entry: String, root: String },
    #[error("entry {entry} is a symlink to {target}, which leads outside {root}")]
    LinkEscapes {
        entry: String,
        target: String,
        root: String,
    },
    #[error("{entry} is a symlink leading outside {source_dir}")]
    SourceLinkEscapes { entry: String, source_dir: String },
    #[error("entry {entry:?} has no usable file name")]
    BadName { entry: String },
    #[error("entry {entry} would be written through the symlink {link}")]
    ThroughLink { entry: String, link: String },
    #[error("entry {entry} needs {file} to be a directory, but a file is there")]
    NotADirectory { entry: String, file: String },
    #[error("entry {entry} is a file, but an earlier source made it a directory")]
    IsADirectory { entry: String },
    #[error("entry {entry} is encrypted; upload the zip without a password")]
    Encrypted { entry: String },
    #[error("entry {entry}: {reason}")]
    EntryUnreadable { entry: String, reason: String },
    #[error("not a readable zip archive ({0})")]
    NotAZip(String),
    #[error(
        "holds {count} entries, more than --max-entries ({limit}); ship fewer files or a layer"
    )]
    TooManyEntries { count: usize, limit: usize },
    #[error(
        "code and layers unpack to more than --max-unpacked-bytes ({limit} bytes, Lambda's 250 MiB)"
    )]
    TooBig { limit: u64 },
    #[error("the zip is larger than --max-zip-bytes ({limit} bytes, Lambda's 50 MiB)")]
    ZipTooLarge { limit: u64 },
    #[error("{}", s3_status(.status, .code, .message))]
    S3 {
        status: u16,
        code: String,
        message: String,
    },
    #[error("cannot reach the S3 endpoint {endpoint}: {reason}")]
    Unreachable { endpoint: String, reason: String },
    #[error("no complete answer from the S3 endpoint {endpoint} within {seconds}s")]
    Timeout { endpoint: String, seconds: u64 },
    #[error("no S3 endpoint: set --s3-endpoint (FARGO_S3_ENDPOINT)")]
    NoEndpoint,
    #[error("bad S3 endpoint: {0}")]
    BadEndpoint(String),
    #[error("TLS set-up failed: {0}")]
    Tls(String),
    #[error("{action} {path}: {error}")]
    Io {
        action: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
}

impl Problem {
    pub fn io(action: &'static str, path: &Path, error: std::io::Error) -> Self {
        Problem::Io {
            action,
            path: path.to_path_buf(),
            error,
        }
    }
}

fn s3_status(status: &u16, code: &str, message: &str) -> String {
    match (code.is_empty(), message.is_empty()) {
        (true, _) => format!("{status} (no S3 error code)"),
        (false, true) => format!("{status} {code}"),
        (false, false) => format!("{status} {code} ({message})"),
    }
}

/// Fetches every source into its directory, code first, then layers, each in order.
pub async fn run(config: Config) -> Result<(), Error> {
    let mut budget = Budget::new(config.max_unpacked_bytes);
    let needs_s3 = config
        .sources
        .iter()
        .chain(&config.layers)
        .any(|source| matches!(source, Source::S3 { .. }));
    let s3 = match (&config.s3, needs_s3) {
        (Some(s3), true) => Some(s3::S3Client::new(s3.clone()).map_err(|problem| Error {
            origin: "fetch-code".into(),
            problem,
        })?),
        _ => None,
    };
    let targets = config
        .sources
        .iter()
        .map(|source| (source, config.task_dir.as_path()))
        .chain(
            config
                .layers
                .iter()
                .map(|layer| (layer, config.opt_dir.as_path())),
        );
    for (source, root) in targets {
        let unpacked = fetch_one(source, root, s3.as_ref(), config.max_entries, &mut budget)
            .await
            .map_err(|problem| Error {
                origin: source.to_string(),
                problem,
            })?;
        tracing::info!(
            source = %source,
            into = %root.display(),
            files = unpacked.files,
            bytes = unpacked.bytes,
            "fetched"
        );
    }
    Ok(())
}

async fn fetch_one(
    source: &Source,
    root: &Path,
    s3: Option<&s3::S3Client>,
    max_entries: usize,
    budget: &mut Budget,
) -> Result<unpack::Unpacked, Problem> {
    match source {
        Source::Directory { path, executable } => {
            unpack::copy_directory(path, executable, root, budget)
        }
        Source::S3 { bucket, key } => {
            let zip = s3.ok_or(Problem::NoEndpoint)?.get(bucket, key).await?;
            unpack::unzip(&zip, root, max_entries, budget)
        }
    }
}
