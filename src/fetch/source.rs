//! Where code comes from: the `--source` / `--layer` syntax.

use std::fmt;
use std::path::PathBuf;

/// One code source, unpacked in command-line order (later over earlier).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A mounted ConfigMap (or any plain directory): its files, not the `..data` machinery.
    Directory {
        path: PathBuf,
        /// Paths inside the directory made executable besides any file named `bootstrap`.
        executable: Vec<String>,
    },
    /// A zip in a bucket, as Lambda takes code.
    S3 { bucket: String, key: String },
}

/// Why a `--source` / `--layer` value was not understood.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error(
        "{0:?} is neither dir:<path>[;executable=<file>,...] nor s3:<bucket>/<key> (or s3://<bucket>/<key>)"
    )]
    Unknown(String),
    #[error("{0:?}: the directory path must be absolute")]
    RelativeDirectory(String),
    #[error("{0:?}: unknown option {1:?}; the one option is executable=<file>,<file>...")]
    UnknownOption(String, String),
    #[error("{0:?}: executable paths must be relative and without `..`")]
    BadExecutable(String),
    #[error("{0:?}: {1:?} is not a bucket name (3-63 of a-z, 0-9, '.', '-')")]
    BadBucket(String, String),
    #[error("{0:?}: the object key is missing (s3:<bucket>/<key>)")]
    MissingKey(String),
}

impl std::str::FromStr for Source {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Self, ParseError> {
        if let Some(rest) = text.strip_prefix("dir:") {
            let (path, options) = match rest.split_once(';') {
                Some((path, options)) => (path, Some(options)),
                None => (rest, None),
            };
            if !path.starts_with('/') {
                return Err(ParseError::RelativeDirectory(text.to_string()));
            }
            let mut executable = Vec::new();
            if let Some(options) = options {
                let Some(names) = options.strip_prefix("executable=") else {
                    return Err(ParseError::UnknownOption(
                        text.to_string(),
                        options.to_string(),
                    ));
                };
                for name in names.split(',').filter(|name| !name.is_empty()) {
                    if name.starts_with('/') || name.split('/').any(|part| part == "..") {
                        return Err(ParseError::BadExecutable(text.to_string()));
                    }
                    executable.push(name.trim_start_matches("./").to_string());
                }
            }
            return Ok(Source::Directory {
                path: PathBuf::from(path),
                executable,
            });
        }
        let rest = text
            .strip_prefix("s3://")
            .or_else(|| text.strip_prefix("s3:"))
            .ok_or_else(|| ParseError::Unknown(text.to_string()))?;
        let (bucket, key) = rest
            .split_once('/')
            .ok_or_else(|| ParseError::MissingKey(text.to_string()))?;
        if !is_bucket_name(bucket) {
            return Err(ParseError::BadBucket(text.to_string(), bucket.to_string()));
        }
        if key.is_empty() {
            return Err(ParseError::MissingKey(text.to_string()));
        }
        Ok(Source::S3 {
            bucket: bucket.to_string(),
            key: key.to_string(),
        })
    }
}

/// S3's bucket naming rules, loosely: enough to keep a path-style URL well-formed.
fn is_bucket_name(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && !name.starts_with(['.', '-'])
        && !name.ends_with(['.', '-'])
}

/// How a source names itself in errors and logs: the first words of the termination message.
impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Directory { path, .. } => write!(f, "{}", path.display()),
            Source::S3 { bucket, key } => write!(f, "s3://{bucket}/{key}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_mounted_configmap_directory() {
        assert_eq!(
            "dir:/fargo/sources/0".parse(),
            Ok(Source::Directory {
                path: "/fargo/sources/0".into(),
                executable: vec![],
            })
        );
    }

    #[test]
    fn reads_the_executable_files_of_a_directory() {
        assert_eq!(
            "dir:/fargo/sources/1;executable=run.sh,./bin/tool".parse(),
            Ok(Source::Directory {
                path: "/fargo/sources/1".into(),
                executable: vec!["run.sh".into(), "bin/tool".into()],
            })
        );
    }

    #[test]
    fn refuses_executable_paths_outside_the_directory() {
        for text in ["dir:/s;executable=../x", "dir:/s;executable=/etc/x"] {
            assert!(matches!(
                text.parse::<Source>(),
                Err(ParseError::BadExecutable(_))
            ));
        }
        assert!(matches!(
            "dir:/s;mode=0755".parse::<Source>(),
            Err(ParseError::UnknownOption(..))
        ));
    }

    #[test]
    fn refuses_a_relative_directory() {
        assert!(matches!(
            "dir:sources/0".parse::<Source>(),
            Err(ParseError::RelativeDirectory(_))
        ));
    }

    #[test]
    fn reads_an_s3_object_in_both_spellings_with_slashes_in_the_key() {
        let expected = Ok(Source::S3 {
            bucket: "photos".into(),
            key: "fn/v2/code.zip".into(),
        });
        assert_eq!("s3:photos/fn/v2/code.zip".parse(), expected);
        assert_eq!("s3://photos/fn/v2/code.zip".parse(), expected);
    }

    #[test]
    fn refuses_s3_sources_without_a_bucket_or_key() {
        assert!(matches!(
            "s3:photos".parse::<Source>(),
            Err(ParseError::MissingKey(_))
        ));
        assert!(matches!(
            "s3:photos/".parse::<Source>(),
            Err(ParseError::MissingKey(_))
        ));
        for bucket in ["Photos", "ph", "-photos", "a/../b"] {
            let text = format!("s3:{bucket}/k.zip");
            assert!(text.parse::<Source>().is_err(), "{text} was accepted");
        }
        assert!(matches!(
            "http://x/y".parse::<Source>(),
            Err(ParseError::Unknown(_))
        ));
    }

    #[test]
    fn names_itself_as_in_the_termination_message() {
        let source: Source = "s3:photos/code.zip".parse().unwrap();
        assert_eq!(source.to_string(), "s3://photos/code.zip");
        let source: Source = "dir:/fargo/sources/0;executable=x".parse().unwrap();
        assert_eq!(source.to_string(), "/fargo/sources/0");
    }
}
