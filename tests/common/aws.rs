//! The AWS CLI (v1) and boto3 as users run them against the activator's Invoke API: the venv of
//! `tests/cluster/awscli.sh` (made on first use, cached by version), run with the credentials a
//! test gives and nothing of this machine's AWS configuration.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// An access key and the region requests are signed for.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub region: String,
}

/// The bin directory of the venv with `aws` and boto3's `python`.
pub struct AwsCli {
    bin: PathBuf,
}

impl AwsCli {
    /// The venv of `tests/cluster/awscli.sh`, which the first call of the process makes when the
    /// cache lacks it (a minute, from PyPI) and the later ones share.
    pub fn new() -> Self {
        static BIN: OnceLock<PathBuf> = OnceLock::new();
        let bin = BIN.get_or_init(|| {
            let root = Path::new(env!("CARGO_MANIFEST_DIR"));
            let output = Command::new(root.join("tests/cluster/awscli.sh"))
                .stderr(std::process::Stdio::inherit())
                .output()
                .expect("running tests/cluster/awscli.sh");
            assert!(
                output.status.success(),
                "tests/cluster/awscli.sh failed ({}): it installs the AWS CLI and boto3 from PyPI \
                 into a venv of Debian's python3 (python3-venv); see its output above",
                output.status
            );
            let bin = String::from_utf8(output.stdout).expect("a UTF-8 path");
            PathBuf::from(bin.trim_end())
        });
        AwsCli { bin: bin.clone() }
    }

    /// `aws ARGS...`, e.g. `["lambda", "invoke", "--endpoint-url", url, "--function-name",
    /// "demo/echo", "--payload", "{}", "out.json"]`, signed with `credentials`, one attempt (no
    /// retries to hide a failure). The CLI v1 sends `--payload` as it is: it has no v2's
    /// `--cli-binary-format`. `demo/echo` goes out as
    /// `POST /2015-03-31/functions/demo%2Fecho/invocations`.
    pub fn aws(&self, args: &[&str], credentials: &Credentials) -> Output {
        self.run(self.bin.join("aws"), args, credentials)
    }

    /// The venv's python running `script` (`python -c`), boto3 importable; boto3 takes the
    /// credentials from the environment as the CLI does.
    pub fn python(&self, script: &str, credentials: &Credentials) -> Output {
        self.run(self.bin.join("python"), &["-c", script], credentials)
    }

    fn run(&self, program: PathBuf, args: &[&str], credentials: &Credentials) -> Output {
        let mut command = Command::new(&program);
        command.args(args);
        // Nothing of the caller's: no profile, session token, CA bundle or endpoint of its own,
        // and no proxy between the client and the activator.
        for (name, _) in std::env::vars_os() {
            if is_aws_or_proxy(&name) {
                command.env_remove(name);
            }
        }
        command
            .env("AWS_ACCESS_KEY_ID", &credentials.access_key_id)
            .env("AWS_SECRET_ACCESS_KEY", &credentials.secret_access_key)
            // The CLI v1 and boto3 read the first; newer SDKs the second.
            .env("AWS_DEFAULT_REGION", &credentials.region)
            .env("AWS_REGION", &credentials.region)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("AWS_MAX_ATTEMPTS", "1")
            .env("AWS_RETRY_MODE", "standard")
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", program.display()))
    }
}

impl Default for AwsCli {
    fn default() -> Self {
        Self::new()
    }
}

fn is_aws_or_proxy(name: &OsStr) -> bool {
    let name = name.to_string_lossy();
    name.starts_with("AWS_") || name.to_ascii_lowercase().ends_with("_proxy")
}
