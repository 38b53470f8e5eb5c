//! `a-chat passwd NAME --file PATH`: adds a user's line to the users file, or replaces
//! the line of that user, keeping every other line and comment as it was. The new text
//! must parse to the same users with only NAME's hash changed, and pass every check the
//! daemon makes, before it replaces the file: written to a temporary file beside it and
//! renamed over it, so a daemon reloading meanwhile reads the old file or the new one,
//! never half of one. A new file is created with mode 0600 and its `[users]` header.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::auth::{Users, UsersError};

/// What [`upsert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edit {
    Added,
    Replaced,
}

/// The users and their hashes as the file gives them, to compare before and after.
#[derive(Deserialize)]
struct Table {
    /// Login → PHC string.
    #[serde(default)]
    users: BTreeMap<String, String>,
}

/// Why a users file's text cannot be edited.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    /// The text is not TOML, or its `users` is not a table of strings.
    #[error("it is not a valid users file: {}", .0.message())]
    NotUsersFile(toml::de::Error),
    /// The edit would change more than `name`'s hash: the user's line is not one
    /// `a-chat passwd` can find and replace (an inline table, a dotted key...).
    #[error("its layout is not one `a-chat passwd` can edit safely (user \"{name}\" is not on a line of its own under [users]); nothing changed: edit it by hand")]
    Layout {
        /// The user being added or changed.
        name: String,
    },
}

/// Why `a-chat passwd --file` left the users file as it was.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The path cannot be followed to its file (a symbolic link to nowhere readable).
    #[error("cannot open {}: {source}", path.display())]
    Open {
        /// The users file, as given.
        path: PathBuf,
        /// What resolving it said.
        source: std::io::Error,
    },
    /// The file exists and cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The users file, as given.
        path: PathBuf,
        /// What reading it said.
        source: std::io::Error,
    },
    /// The file was read, but its mode and owner cannot be (to give them to the new file).
    #[error("{0}")]
    Metadata(std::io::Error),
    /// The text cannot be edited (see [`EditError`]).
    #[error("{}: {source}", path.display())]
    Edit {
        /// The users file, as given.
        path: PathBuf,
        /// Why its text cannot be edited.
        source: EditError,
    },
    /// The edited file would not pass the daemon's checks.
    #[error("{0}; nothing changed")]
    Check(UsersError),
    /// The edited file could not be written in place of the old one.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The users file, as given.
        path: PathBuf,
        /// Why the new file could not replace it.
        source: ReplaceError,
    },
}

/// Why the new users file could not replace the old one (the old one is as it was).
#[derive(Debug, thiserror::Error)]
pub enum ReplaceError {
    /// The temporary file is there already: another edit is under way, or one was
    /// interrupted.
    #[error("{} exists: another `a-chat passwd --file` is editing it, or one was interrupted (then remove that file)", temp.display())]
    Busy {
        /// The temporary file beside the users file.
        temp: PathBuf,
    },
    /// The temporary file could not be created.
    #[error("cannot create {}: {source}", temp.display())]
    Create {
        /// The temporary file beside the users file.
        temp: PathBuf,
        /// What creating it said.
        source: std::io::Error,
    },
    /// Writing, flushing or renaming the temporary file failed (it is removed).
    #[error("{0}")]
    Io(std::io::Error),
}

fn users_of(text: &str) -> Result<BTreeMap<String, String>, toml::de::Error> {
    toml::from_str::<Table>(text).map(|t| t.users)
}

/// The users file `text` with `line` (`NAME = "HASH"`, from `users_line`) for `name`:
/// in place of that user's line if there is one, else at the end of the `[users]` table
/// (a header first if the file has none). Refused when the result would hold anything
/// else than the same users with `name`'s hash set to `hash`.
pub fn upsert(text: &str, name: &str, hash: &str, line: &str) -> Result<(String, Edit), EditError> {
    let mut users = users_of(text).map_err(EditError::NotUsersFile)?;
    let mut lines: Vec<&str> = text.lines().collect();
    let header = lines.iter().position(|l| is_users_header(l));
    let found = header.and_then(|header| {
        lines[header + 1..]
            .iter()
            .take_while(|l| !l.trim_start().starts_with('['))
            .position(|l| key_of(l).as_deref() == Some(name))
            .map(|i| header + 1 + i)
    });
    let edit = match found {
        Some(at) => {
            lines[at] = line;
            Edit::Replaced
        }
        None => {
            match header {
                Some(header) => {
                    // After the table's last user (the table ends at the next header or
                    // at the end of the file), or right after its header.
                    let end = lines[header + 1..]
                        .iter()
                        .position(|l| l.trim_start().starts_with('['))
                        .map_or(lines.len(), |i| header + 1 + i);
                    let last = (header + 1..end)
                        .rev()
                        .find(|&i| key_of(lines[i]).is_some())
                        .unwrap_or(header);
                    lines.insert(last + 1, line);
                }
                None => {
                    lines.push("[users]");
                    lines.push(line);
                }
            }
            Edit::Added
        }
    };
    let mut out = lines.join("\n");
    out.push('\n');
    users.insert(name.to_owned(), hash.to_owned());
    let unchanged = users_of(&out).is_ok_and(|after| after == users);
    if !unchanged {
        return Err(EditError::Layout {
            name: name.to_owned(),
        });
    }
    Ok((out, edit))
}

/// The key of a `key = value` line, bare or quoted (with `\"` and `\\` escapes, as
/// `users_line` writes them); `None` for any other line.
fn key_of(line: &str) -> Option<String> {
    let line = line.trim_start();
    if line.starts_with('#') {
        return None;
    }
    if let Some(quoted) = line.strip_prefix('"') {
        let mut key = String::new();
        let mut chars = quoted.chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => return chars.as_str().trim_start().starts_with('=').then_some(key),
                '\\' => key.push(chars.next()?),
                c => key.push(c),
            }
        }
        return None;
    }
    let (key, _) = line.split_once('=')?;
    Some(key.trim().to_owned())
}

/// A `[users]` table header, with or without spaces and a comment.
fn is_users_header(line: &str) -> bool {
    let line = line.split('#').next().unwrap_or("").trim();
    line.strip_prefix('[')
        .and_then(|l| l.strip_suffix(']'))
        .is_some_and(|inner| inner.trim() == "users")
}

/// Adds or replaces `name`'s line (`line`, whose hash is `hash`) in the users file at
/// `path`, and says what it did, for the person who ran it.
pub fn write(path: &Path, name: &str, hash: &str, line: &str) -> Result<String, FileError> {
    let shown = path.display();
    // The file a symbolic link points to is the one to replace, not the link.
    let target = match std::fs::canonicalize(path) {
        Ok(target) => target,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => path.to_path_buf(),
        Err(source) => {
            return Err(FileError::Open {
                path: path.to_owned(),
                source,
            })
        }
    };
    let existing = match std::fs::read_to_string(&target) {
        Ok(text) => Some((
            text,
            std::fs::metadata(&target).map_err(FileError::Metadata)?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(FileError::Read {
                path: path.to_owned(),
                source,
            })
        }
    };
    let text = existing.as_ref().map_or("", |(text, _)| text.as_str());
    let (new, edit) = upsert(text, name, hash, line).map_err(|source| FileError::Edit {
        path: path.to_owned(),
        source,
    })?;
    // Every check the daemon makes (look-alike names among them) before anything is written.
    Users::parse(&new, &shown.to_string()).map_err(FileError::Check)?;
    let mode = existing
        .as_ref()
        .map_or(0o600, |(_, meta)| meta.permissions().mode() & 0o7777);
    let owner = existing.as_ref().map(|(_, meta)| (meta.uid(), meta.gid()));
    replace(&target, new.as_bytes(), mode, owner).map_err(|source| FileError::Write {
        path: path.to_owned(),
        source,
    })?;
    Ok(match edit {
        Edit::Added => format!("added user \"{name}\" to {shown}"),
        Edit::Replaced => format!("replaced the password of user \"{name}\" in {shown}"),
    })
}

/// Writes `data` to a new file beside `target` (with `mode`, and `owner` when given),
/// flushes it to disk and renames it over `target`. The temporary file's fixed name makes
/// a second `a-chat passwd --file` on the same file fail rather than lose an edit.
fn replace(
    target: &Path,
    data: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> Result<(), ReplaceError> {
    let dir = match target.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = target
        .file_name()
        .map_or_else(|| "users".into(), |n| n.to_string_lossy().into_owned());
    let temp = dir.join(format!(".{file_name}.a-chat-passwd.tmp"));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::AlreadyExists => ReplaceError::Busy { temp: temp.clone() },
            _ => ReplaceError::Create {
                temp: temp.clone(),
                source,
            },
        })?;
    let written = (|| -> std::io::Result<()> {
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&file, Some(uid), Some(gid))?;
        }
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.write_all(data)?;
        file.sync_all()?;
        std::fs::rename(&temp, target)?;
        // The rename itself reaches the disk with the directory.
        File::open(&dir)?.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(ReplaceError::Io(e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str =
        "$argon2id$v=19$m=64,t=1,p=1$YWFhYWFhYWE$YWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWE";
    const B: &str =
        "$argon2id$v=19$m=64,t=1,p=1$YmJiYmJiYmI$YmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmI";

    fn line(name: &str, hash: &str) -> String {
        crate::auth::passwd::users_line(name, hash)
    }

    #[test]
    fn a_new_file_gets_its_header() {
        let (text, edit) = upsert("", "alice", A, &line("alice", A)).unwrap();
        assert_eq!(edit, Edit::Added);
        assert_eq!(text, format!("[users]\nalice = \"{A}\"\n"));
        let (text, _) = upsert("# users\n", "alice", A, &line("alice", A)).unwrap();
        assert_eq!(text, format!("# users\n[users]\nalice = \"{A}\"\n"));
    }

    #[test]
    fn a_user_is_added_at_the_end_of_the_table_and_replaced_in_place() {
        let start = format!("# made by hand\n[users] # the team\nalice = \"{A}\"  # lead\n\n");
        let (text, edit) = upsert(&start, "b.b", B, &line("b.b", B)).unwrap();
        assert_eq!(edit, Edit::Added);
        assert_eq!(
            text,
            format!("# made by hand\n[users] # the team\nalice = \"{A}\"  # lead\n\"b.b\" = \"{B}\"\n\n")
        );
        let (text, edit) = upsert(&text, "alice", B, &line("alice", B)).unwrap();
        assert_eq!(edit, Edit::Replaced);
        assert_eq!(
            text,
            format!("# made by hand\n[users] # the team\nalice = \"{B}\"\n\"b.b\" = \"{B}\"\n\n")
        );
        let (again, edit) = upsert(&text, "b.b", A, &line("b.b", A)).unwrap();
        assert_eq!(edit, Edit::Replaced);
        assert!(again.contains(&format!("\"b.b\" = \"{A}\"")), "{again}");
    }

    #[test]
    fn keys_are_read_bare_and_quoted() {
        assert_eq!(key_of("alice = \"x\"").as_deref(), Some("alice"));
        assert_eq!(key_of("  \"b.b\"= \"x\"").as_deref(), Some("b.b"));
        assert_eq!(key_of(r#""a\"b\\" = "x""#).as_deref(), Some("a\"b\\"));
        assert_eq!(key_of("#alice = x"), None, "a comment");
        assert_eq!(key_of("\"open"), None);
        assert_eq!(key_of("[users]"), None);
    }

    #[test]
    fn a_layout_it_cannot_edit_is_refused() {
        let inline = format!("users = {{ alice = \"{A}\" }}\n");
        let e = upsert(&inline, "bob", B, &line("bob", B)).unwrap_err();
        assert!(matches!(e, EditError::Layout { .. }), "{e}");
        assert!(e.to_string().contains("nothing changed"), "{e}");
        let e = upsert(&inline, "alice", B, &line("alice", B)).unwrap_err();
        assert!(e.to_string().contains("nothing changed"), "{e}");
        let e = upsert("[users\n", "bob", B, &line("bob", B)).unwrap_err();
        assert!(matches!(e, EditError::NotUsersFile(_)), "{e}");
        assert!(e.to_string().contains("not a valid users file"), "{e}");
    }
}
