//! Relative paths that are safe to join onto a root: the one rule every place
//! that turns a name it did not make itself (a worker's result, an uploaded
//! file, an archive entry, an object key) into a file under a root applies.
//! Pure string checks; no filesystem access.
use thiserror::Error;

/// Longest relative path accepted, in bytes (Linux's `PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;
/// Longest single component, in bytes (Linux's `NAME_MAX`; our outputs add
/// `.npy`, so an input name may be 4 bytes shorter than this in practice).
pub const MAX_COMPONENT_BYTES: usize = 255;

/// Why a relative path could land outside its root or cannot be stored.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PathError {
    /// The path is empty.
    #[error("empty path")]
    Empty,
    /// Longer than [`MAX_PATH_BYTES`].
    #[error("path is {0} bytes long, over the limit of {MAX_PATH_BYTES}")]
    TooLong(usize),
    /// A component longer than [`MAX_COMPONENT_BYTES`].
    #[error("a path component is {0} bytes long, over the limit of {MAX_COMPONENT_BYTES}")]
    ComponentTooLong(usize),
    /// Starts with `/`: it would replace the root when joined.
    #[error("absolute path")]
    Absolute,
    /// A NUL byte (truncates the path in every C API).
    #[error("NUL byte in the path")]
    Nul,
    /// `..`, `.` or an empty component (`a//b`, a trailing `/`).
    #[error("'{0}' component in the path")]
    Component(String),
}

/// Checks a `/`-separated relative path: not empty, at most
/// [`MAX_PATH_BYTES`] bytes and [`MAX_COMPONENT_BYTES`] per component, not
/// absolute, no NUL, and no `.`, `..` or empty component. Such a path, joined
/// onto a root, names a file inside it (symlinks inside the root aside).
///
/// Backslashes and other control characters are legal file-name bytes on
/// Unix and cannot escape a root there, so they pass; places that take names
/// from browsers or archives refuse them separately.
pub fn check_relative(rel: &str) -> Result<(), PathError> {
    if rel.is_empty() {
        return Err(PathError::Empty);
    }
    if rel.len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong(rel.len()));
    }
    if rel.contains('\0') {
        return Err(PathError::Nul);
    }
    if rel.starts_with('/') {
        return Err(PathError::Absolute);
    }
    for part in rel.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err(PathError::Component(part.to_string()));
        }
        if part.len() > MAX_COMPONENT_BYTES {
            return Err(PathError::ComponentTooLong(part.len()));
        }
    }
    Ok(())
}

/// The relative name of an input's `.npy` output, `rel` + `.npy`, when it
/// passes [`check_relative`]: the one rule the engine (which fails an image
/// whose output cannot be named, in every mode) and the master (which
/// refuses a streamed output under a name no honest worker sends) share.
pub fn output_name(rel: &str) -> Result<String, PathError> {
    let out = format!("{rel}.npy");
    check_relative(&out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_could_escape_are_refused() {
        for (bad, want) in [
            ("", PathError::Empty),
            ("/etc/passwd", PathError::Absolute),
            ("a/../../x", PathError::Component("..".into())),
            ("..", PathError::Component("..".into())),
            ("./x", PathError::Component(".".into())),
            ("a//b", PathError::Component(String::new())),
            ("a/", PathError::Component(String::new())),
            ("a\0b", PathError::Nul),
        ] {
            assert_eq!(check_relative(bad), Err(want), "{bad:?}");
        }
        let long = "a/".repeat(MAX_PATH_BYTES / 2) + "b";
        assert_eq!(check_relative(&long), Err(PathError::TooLong(long.len())));
        let wide = "x".repeat(MAX_COMPONENT_BYTES + 1);
        assert_eq!(
            check_relative(&wide),
            Err(PathError::ComponentTooLong(wide.len()))
        );
    }

    #[test]
    fn output_names_fit_the_component_limit() {
        let fits = "n".repeat(MAX_COMPONENT_BYTES - 4);
        assert_eq!(output_name(&fits), Ok(format!("{fits}.npy")));
        let over = "n".repeat(MAX_COMPONENT_BYTES - 3);
        assert_eq!(
            output_name(&format!("d/{over}")),
            Err(PathError::ComponentTooLong(MAX_COMPONENT_BYTES + 1))
        );
    }

    #[test]
    fn ordinary_paths_pass() {
        for ok in [
            "x.png",
            "a/b/c.jpg",
            "..x/y..",
            "a\\b.png",
            "ünï/cödé.png",
            "a b",
        ] {
            assert_eq!(check_relative(ok), Ok(()), "{ok:?}");
        }
    }
}
