//! CPython versions: parsing, and which ones gilscope reads.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct Version {
    pub major: u8,
    pub minor: u8,
    pub patch: u8,
}

pub const SUPPORTED: &str = "3.8 to 3.15 (with or without the GIL)";
pub const OLDEST_MINOR: u8 = 8;
pub const NEWEST_MINOR: u8 = 15;

impl Version {
    pub const fn new(major: u8, minor: u8, patch: u8) -> Self {
        Version {
            major,
            minor,
            patch,
        }
    }

    /// From a `PY_VERSION_HEX`-shaped number (`Py_Version`, `_Py_DebugOffsets.version`).
    pub fn from_hex(hex: u64) -> Self {
        Version::new((hex >> 24) as u8, (hex >> 16) as u8, (hex >> 8) as u8)
    }

    /// Parses "3.11.7", "3.12.0rc1", "3.13.0+" (anything after the patch digits is ignored).
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.splitn(3, '.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch_text = parts.next()?;
        let digits: String = patch_text
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        Some(Version::new(major, minor, digits.parse().ok()?))
    }

    pub fn is_supported(&self) -> bool {
        self.major == 3 && (OLDEST_MINOR..=NEWEST_MINOR).contains(&self.minor)
    }

    pub fn at_least(&self, minor: u8) -> bool {
        self.major == 3 && self.minor >= minor
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Finds a `PY_VERSION` string ("3.9.18", "3.10.0rc2") in a binary's read-only data,
/// preferring one whose minor version is `expected_minor`. The string is looked for at any
/// position, not only at the start of a NUL-terminated string: linkers merge it into the tail
/// of longer strings such as the install prefix "/root/.pyenv/versions/3.8.18".
pub fn find_version_string(rodata: &[u8], expected_minor: Option<u8>) -> Option<Version> {
    let mut found: Vec<Version> = Vec::new();
    for start in memchr_all(rodata, b'3') {
        let boundary =
            start == 0 || !(rodata[start - 1].is_ascii_digit() || rodata[start - 1] == b'.');
        if !boundary || rodata.get(start + 1) != Some(&b'.') {
            continue;
        }
        let len = rodata[start..]
            .iter()
            .take(13)
            .take_while(|b| is_version_byte(**b))
            .count();
        let terminated = matches!(rodata.get(start + len), Some(0 | b' '));
        let Ok(text) = std::str::from_utf8(&rodata[start..start + len]) else {
            continue;
        };
        if terminated && looks_like_py_version(text) {
            found.extend(Version::parse(text));
        }
    }
    let matching = |v: &Version| expected_minor.is_none_or(|m| v.minor == m);
    found.into_iter().find(matching)
}

fn is_version_byte(b: u8) -> bool {
    b.is_ascii_digit() || matches!(b, b'.' | b'a' | b'b' | b'r' | b'c' | b'+')
}

fn memchr_all(haystack: &[u8], needle: u8) -> impl Iterator<Item = usize> + '_ {
    haystack
        .iter()
        .enumerate()
        .filter(move |(_, b)| **b == needle)
        .map(|(i, _)| i)
}

/// "3.X.Y" optionally followed by a release tag (a1, b2, rc1) and/or "+", nothing else.
fn looks_like_py_version(text: &str) -> bool {
    let rest = text.trim_end_matches('+');
    let core_len = rest
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(rest.len());
    let (core, tag) = rest.split_at(core_len);
    let numbers: Vec<&str> = core.split('.').collect();
    let tag_ok = tag.is_empty()
        || ["a", "b", "rc"].iter().any(|t| {
            tag.strip_prefix(t)
                .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
        });
    numbers.len() == 3
        && numbers
            .iter()
            .all(|n| !n.is_empty() && n.len() <= 2 && n.chars().all(|c| c.is_ascii_digit()))
        && tag_ok
}

/// The minor version in a file name like "libpython3.9.so.1.0" or "python3.12".
pub fn minor_from_file_name(name: &str) -> Option<u8> {
    let at = name.find("python3.")? + "python3.".len();
    let digits: String = name[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_versions_and_hex() {
        assert_eq!(Version::parse("3.11.7"), Some(Version::new(3, 11, 7)));
        assert_eq!(Version::parse("3.12.0rc1"), Some(Version::new(3, 12, 0)));
        assert_eq!(Version::from_hex(0x030d00f0), Version::new(3, 13, 0));
        assert!(Version::new(3, 14, 0).is_supported());
        assert!(!Version::new(3, 7, 16).is_supported());
    }

    #[test]
    fn finds_the_version_string_in_rodata() {
        let rodata = b"\0hello\x003.2.1.0\0%s (%s)\x003.9.18\0/opt/py/3.10.0rc2\0";
        assert_eq!(
            find_version_string(rodata, Some(9)),
            Some(Version::new(3, 9, 18))
        );
        assert_eq!(
            find_version_string(rodata, Some(10)),
            Some(Version::new(3, 10, 0))
        );
        assert_eq!(find_version_string(rodata, Some(8)), None);
    }

    #[test]
    fn minor_from_names() {
        assert_eq!(minor_from_file_name("libpython3.9.so.1.0"), Some(9));
        assert_eq!(minor_from_file_name("python3.12"), Some(12));
        assert_eq!(minor_from_file_name("bash"), None);
    }
}
