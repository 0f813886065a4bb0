//! Which paths an archive or a directory may write: the zip-slip checks, and the byte budget.
//! Pure; the writing is in [`super::unpack`].

use std::fmt;

/// A path inside the target directory: normal components only, at least one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryPath(Vec<String>);

/// Why an entry name is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathProblem {
    /// `/etc/passwd`, `C:\x`, or a `..` component: it would land outside the target.
    Escapes,
    /// Empty, or only `.` components.
    Empty,
    /// A NUL byte, which no file name may hold.
    Nul,
}

impl EntryPath {
    /// Checks an entry name as archives spell it. `\` counts as a separator too: unzip tools
    /// on Windows write it, and `..\..\x` must not slip through as one odd file name.
    pub fn parse(name: &str) -> Result<Self, PathProblem> {
        if name.contains('\0') {
            return Err(PathProblem::Nul);
        }
        if name.starts_with(['/', '\\']) {
            return Err(PathProblem::Escapes);
        }
        let mut parts = Vec::new();
        for (index, part) in name.split(['/', '\\']).enumerate() {
            match part {
                "" | "." => {}
                ".." => return Err(PathProblem::Escapes),
                drive if index == 0 && is_drive(drive) => return Err(PathProblem::Escapes),
                part => parts.push(part.to_string()),
            }
        }
        if parts.is_empty() {
            return Err(PathProblem::Empty);
        }
        Ok(EntryPath(parts))
    }

    pub fn components(&self) -> &[String] {
        &self.0
    }

    pub fn file_name(&self) -> &str {
        self.0.last().map(String::as_str).unwrap_or_default()
    }

    /// Whether a symlink here pointing at `target` stays inside the target directory, resolved
    /// by name alone. The unpacker also resolves it on disk once written (names alone miss a
    /// link through another link).
    pub fn link_stays_inside(&self, target: &str) -> bool {
        if target.is_empty() || target.contains('\0') || target.starts_with(['/', '\\']) {
            return false;
        }
        let mut depth = self.0.len() - 1;
        for (index, part) in target.split(['/', '\\']).enumerate() {
            match part {
                "" | "." => {}
                ".." => match depth.checked_sub(1) {
                    Some(up) => depth = up,
                    None => return false,
                },
                drive if index == 0 && is_drive(drive) => return false,
                _ => depth += 1,
            }
        }
        true
    }
}

fn is_drive(part: &str) -> bool {
    let bytes = part.as_bytes();
    bytes.len() == 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':'
}

impl fmt::Display for EntryPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("/"))
    }
}

/// The unpacked bytes left for everything fetched into the pod (code and layers together, as
/// Lambda's 250 MiB counts them).
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    limit: u64,
    used: u64,
}

/// More bytes than the budget has left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverBudget {
    pub limit: u64,
}

impl Budget {
    pub fn new(limit: u64) -> Self {
        Budget { limit, used: 0 }
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    pub fn left(&self) -> u64 {
        self.limit - self.used
    }

    /// Takes `bytes` from what is left, or nothing when they do not fit.
    pub fn charge(&mut self, bytes: u64) -> Result<(), OverBudget> {
        match self.used.checked_add(bytes) {
            Some(used) if used <= self.limit => {
                self.used = used;
                Ok(())
            }
            _ => Err(OverBudget { limit: self.limit }),
        }
    }

    /// Whether sizes an archive declares would fit: a cheap refusal before anything is
    /// written. What is written is charged as it is read, whatever the archive declared.
    pub fn fits(&self, declared: impl IntoIterator<Item = u64>) -> bool {
        let mut total = 0u64;
        for size in declared {
            match total.checked_add(size) {
                Some(sum) if sum <= self.left() => total = sum,
                _ => return false,
            }
        }
        true
    }
}

/// Whether a file is written executable: named `bootstrap` (a custom runtime's entry point,
/// often zipped on systems that keep no mode), marked so by its source, or with any execute
/// bit in its mode. Nothing else of the mode survives: no setuid, setgid or sticky bit.
pub fn is_executable(path: &EntryPath, mode: Option<u32>, marked: bool) -> bool {
    path.file_name() == "bootstrap" || marked || mode.is_some_and(|mode| mode & 0o111 != 0)
}

/// The mode files are written with.
pub fn file_mode(executable: bool) -> u32 {
    if executable { 0o755 } else { 0o644 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(name: &str) -> EntryPath {
        EntryPath::parse(name).unwrap()
    }

    #[test]
    fn keeps_plain_nested_paths() {
        assert_eq!(path("lib/util.py").to_string(), "lib/util.py");
        assert_eq!(path("./lib//util.py").to_string(), "lib/util.py");
        assert_eq!(path("lib/").to_string(), "lib");
        assert_eq!(path("lib\\util.py").components(), ["lib", "util.py"]);
        assert_eq!(path("..data.json").to_string(), "..data.json");
    }

    #[test]
    fn refuses_paths_that_climb_out_of_the_target() {
        for name in [
            "../../etc/passwd",
            "lib/../../x",
            "lib/../x",
            "..",
            "..\\..\\x",
            "/etc/passwd",
            "\\x",
            "C:\\Windows\\x",
            "c:/x",
        ] {
            assert_eq!(EntryPath::parse(name), Err(PathProblem::Escapes), "{name}");
        }
    }

    #[test]
    fn refuses_empty_names_and_nul_bytes() {
        assert_eq!(EntryPath::parse(""), Err(PathProblem::Empty));
        assert_eq!(EntryPath::parse("./"), Err(PathProblem::Empty));
        assert_eq!(EntryPath::parse("a\0b"), Err(PathProblem::Nul));
    }

    #[test]
    fn links_may_point_anywhere_inside_the_target_and_nowhere_else() {
        let link = path("node_modules/.bin/tsc");
        assert!(link.link_stays_inside("../typescript/bin/tsc"));
        assert!(link.link_stays_inside("../../index.js"));
        assert!(!link.link_stays_inside("../../../etc/passwd"));
        assert!(!link.link_stays_inside("/etc/passwd"));
        assert!(!link.link_stays_inside(""));
        assert!(path("top").link_stays_inside("lib/x"));
        assert!(!path("top").link_stays_inside(".."));
        assert!(!path("top").link_stays_inside("lib/../../x"));
    }

    #[test]
    fn the_budget_refuses_what_does_not_fit_and_keeps_what_did() {
        let mut budget = Budget::new(100);
        assert_eq!(budget.charge(60), Ok(()));
        assert_eq!(budget.charge(41), Err(OverBudget { limit: 100 }));
        assert_eq!(budget.left(), 40);
        assert_eq!(budget.charge(40), Ok(()));
        assert_eq!(budget.charge(1), Err(OverBudget { limit: 100 }));
        assert_eq!(
            Budget::new(10).charge(u64::MAX),
            Err(OverBudget { limit: 10 })
        );
    }

    #[test]
    fn declared_sizes_are_summed_without_overflow() {
        let budget = Budget::new(100);
        assert!(budget.fits([50, 50]));
        assert!(!budget.fits([50, 51]));
        assert!(!budget.fits([u64::MAX, 2]));
    }

    #[test]
    fn only_the_execute_bit_of_a_mode_survives() {
        let handler = path("index.js");
        assert!(!is_executable(&handler, Some(0o4644), false));
        assert!(is_executable(&handler, Some(0o4755), false));
        assert!(is_executable(&handler, None, true));
        assert!(!is_executable(&handler, None, false));
        assert!(is_executable(&path("bootstrap"), Some(0o644), false));
        assert_eq!(file_mode(true), 0o755);
        assert_eq!(file_mode(false), 0o644);
    }
}
