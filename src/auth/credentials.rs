//! The first line of a connection when logins are authenticated (ARCHITECTURE §9):
//! `NAME PASSWORD`, the password being the rest of the line after the first space.

/// A login line split into its name and password. Borrowed from the line; never logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credentials<'a> {
    /// The login asked for, checked against the users file, then like any login.
    pub name: &'a str,
    /// Everything after the first space, spaces included, exactly as sent.
    pub password: &'a str,
}

/// Splits a login line at its first space; `None` for a line without one (answered
/// `error: authentication failed`, like a wrong password).
pub fn parse(line: &str) -> Option<Credentials<'_>> {
    let (name, password) = line.split_once(' ')?;
    Some(Credentials { name, password })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(line: &str) -> Option<(&str, &str)> {
        parse(line).map(|c| (c.name, c.password))
    }

    #[test]
    fn the_password_is_the_rest_after_the_first_space() {
        assert_eq!(split("alice secret"), Some(("alice", "secret")));
        assert_eq!(
            split("alice correct horse battery"),
            Some(("alice", "correct horse battery"))
        );
        assert_eq!(split("alice  two"), Some(("alice", " two")));
        assert_eq!(split("alice "), Some(("alice", "")));
        assert_eq!(split(" secret"), Some(("", "secret")));
        assert_eq!(split("alice pä:ss,\t"), Some(("alice", "pä:ss,\t")));
    }

    #[test]
    fn a_line_without_a_space_has_no_password() {
        assert_eq!(split("alice"), None);
        assert_eq!(split(""), None);
        assert_eq!(split("alice\tsecret"), None);
    }
}
