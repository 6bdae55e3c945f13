//! Who a request comes from: bearer tokens from a token file in the format of
//! kube-apiserver's `--token-auth-file`, one identity per line:
//! `token,user,uid,"group1,group2"`.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::kubeconfig::write_private;

/// Upstream's superuser group: always allowed, whatever RBAC says.
pub const MASTERS: &str = "system:masters";
/// Every authenticated identity is in this group, as upstream adds it.
pub const AUTHENTICATED: &str = "system:authenticated";
const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";
const SERVICE_ACCOUNTS: &str = "system:serviceaccounts";
/// The identity the server adds when the file has no member of [`MASTERS`].
pub const ADMIN_USER: &str = "admin";

/// Who a request comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user name RBAC subjects of kind User match.
    pub user: String,
    /// The user's uid.
    pub uid: String,
    /// The groups RBAC subjects of kind Group match.
    pub groups: Vec<String>,
}

impl Identity {
    /// A user in `groups`, its uid its name.
    pub fn new(user: impl Into<String>, groups: &[&str]) -> Self {
        let user = user.into();
        Self {
            uid: user.clone(),
            user,
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    /// The user name upstream gives a ServiceAccount's tokens.
    pub fn service_account(namespace: &str, name: &str) -> Self {
        Self::new(format!("{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}"), &[])
    }

    /// Whether the identity is in [`MASTERS`], which RBAC does not restrict.
    pub fn is_master(&self) -> bool {
        self.groups.iter().any(|g| g == MASTERS)
    }

    /// The namespace of a `system:serviceaccount:NS:NAME` user.
    pub fn service_account_namespace(&self) -> Option<&str> {
        let rest = self.user.strip_prefix(SERVICE_ACCOUNT_PREFIX)?;
        let (namespace, name) = rest.split_once(':')?;
        (!namespace.is_empty() && !name.is_empty() && !name.contains(':')).then_some(namespace)
    }

    /// The identity as a request carries it: its own groups and the ones upstream's
    /// authenticators add (a ServiceAccount's `system:serviceaccounts` and
    /// `system:serviceaccounts:NS`, everyone's `system:authenticated`).
    fn authenticated(&self) -> Self {
        let mut groups = self.groups.clone();
        if let Some(namespace) = self.service_account_namespace() {
            groups.push(SERVICE_ACCOUNTS.into());
            groups.push(format!("{SERVICE_ACCOUNTS}:{namespace}"));
        }
        groups.push(AUTHENTICATED.into());
        let mut seen = Vec::new();
        groups.retain(|g| {
            let new = !seen.contains(g);
            seen.push(g.clone());
            new
        });
        Self {
            groups,
            ..self.clone()
        }
    }
}

/// One line of the token file.
#[derive(Debug, Clone)]
pub struct TokenEntry {
    /// The bearer token.
    pub token: String,
    /// Who presents it.
    pub identity: Identity,
}

/// Why the token file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// The file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The token file.
        path: PathBuf,
        /// The system's error.
        source: io::Error,
    },
    /// A line of the file is not a token entry.
    #[error("{} {source}", path.display())]
    Invalid {
        /// The token file.
        path: PathBuf,
        /// The line and what is wrong with it.
        source: LineError,
    },
}

/// A line of the token file that is not a token entry, by its number (1-based).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct LineError {
    /// The line's number, from 1.
    pub line: usize,
    /// What is wrong with it.
    pub problem: LineProblem,
}

/// What is wrong with one line of the token file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineProblem {
    /// Fewer than the three columns every entry has.
    #[error("expected at least 3 columns (token, user name, user uid), found {0}")]
    TooFewColumns(usize),
    /// The token or the user name column is empty.
    #[error("the token and the user name may not be empty")]
    EmptyTokenOrUser,
    /// An earlier line has the same token.
    #[error("the token is given twice")]
    DuplicateToken,
    /// A quoted field runs to the end of the line.
    #[error("a quoted field is not closed")]
    UnclosedQuote,
    /// Something other than a comma follows a quoted field's closing quote.
    #[error("extraneous text after a quoted field")]
    TextAfterQuote,
    /// A field that does not start with a quote has one inside.
    #[error("a quote inside an unquoted field")]
    QuoteInUnquotedField,
}

/// The identities the server knows, each with its token.
#[derive(Debug, Clone, Default)]
pub struct TokenFile {
    entries: Vec<TokenEntry>,
}

impl TokenFile {
    /// Parses the CSV lines; an error names the line (1-based) and what is wrong.
    pub fn parse(text: &str) -> Result<Self, LineError> {
        let mut file = Self::default();
        for (index, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let at = |problem| LineError {
                line: index + 1,
                problem,
            };
            let entry = parse_line(line).map_err(at)?;
            if file.entries.iter().any(|e| e.token == entry.token) {
                return Err(at(LineProblem::DuplicateToken));
            }
            file.entries.push(entry);
        }
        Ok(file)
    }

    /// The file's text, each entry a line that [`TokenFile::parse`] reads back.
    pub fn render(&self) -> String {
        let mut text = String::new();
        for TokenEntry { token, identity } in &self.entries {
            let groups = identity.groups.join(",");
            let line = [token, &identity.user, &identity.uid, &groups].map(|f| quoted(f));
            text.push_str(&line.join(","));
            text.push('\n');
        }
        text
    }

    /// The file at `path`; None when there is none.
    pub fn read(path: &Path) -> Result<Option<Self>, TokenFileError> {
        let io_error = |source| TokenFileError::Io {
            path: path.to_path_buf(),
            source,
        };
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(e)),
        };
        let mode = fs::metadata(path).map_err(io_error)?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "the token file is readable by others");
        }
        Self::parse(&text)
            .map(Some)
            .map_err(|source| TokenFileError::Invalid {
                path: path.to_path_buf(),
                source,
            })
    }

    /// Writes the file 0600 through a temporary file, as the kubeconfig is written.
    pub fn write(&self, path: &Path) -> Result<(), TokenFileError> {
        write_private(path, self.render().as_bytes()).map_err(|source| TokenFileError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// The entries, in the file's order.
    pub fn entries(&self) -> &[TokenEntry] {
        &self.entries
    }

    /// The token of `identity`'s user; a fresh one, with the identity added, when
    /// the file has no such user. An existing entry is kept as it is.
    pub fn ensure(&mut self, identity: Identity) -> String {
        if let Some(entry) = self
            .entries
            .iter()
            .find(|e| e.identity.user == identity.user)
        {
            return entry.token.clone();
        }
        let token = fresh_token();
        self.entries.push(TokenEntry {
            token: token.clone(),
            identity,
        });
        token
    }

    /// The first identity in [`MASTERS`]: the one the server's kubeconfig carries.
    pub fn admin(&self) -> Option<&TokenEntry> {
        self.entries.iter().find(|e| e.identity.is_master())
    }
}

/// 244 random bits (two v4 UUIDs) as 64 hex digits.
pub fn fresh_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// The token file at `path` with an [`ADMIN_USER`] in [`MASTERS`] added (and the file
/// rewritten) when it has no member of that group. A new file takes over the single
/// token of earlier versions (`legacy`), so kubeconfigs they issued keep working.
pub fn load_with_admin(path: &Path, legacy: &Path) -> Result<TokenFile, TokenFileError> {
    let mut file = match TokenFile::read(path)? {
        Some(file) => file,
        None => adopt_legacy(legacy),
    };
    if file.admin().is_none() {
        file.ensure(Identity::new(ADMIN_USER, &[MASTERS]));
        file.write(path)?;
        tracing::info!(path = %path.display(), user = ADMIN_USER, "added the admin identity to the token file");
    }
    Ok(file)
}

fn adopt_legacy(legacy: &Path) -> TokenFile {
    let token = fs::read_to_string(legacy)
        .map(|t| t.trim().to_string())
        .unwrap_or_default();
    if token.len() < 32 {
        return TokenFile::default();
    }
    if let Err(error) = fs::remove_file(legacy) {
        tracing::warn!(path = %legacy.display(), %error, "could not remove the old token file");
    }
    TokenFile {
        entries: vec![TokenEntry {
            token,
            identity: Identity::new(ADMIN_USER, &[MASTERS]),
        }],
    }
}

fn parse_line(line: &str) -> Result<TokenEntry, LineProblem> {
    let fields = split_csv(line)?;
    let [token, user, uid, rest @ ..] = fields.as_slice() else {
        return Err(LineProblem::TooFewColumns(fields.len()));
    };
    if token.is_empty() || user.is_empty() {
        return Err(LineProblem::EmptyTokenOrUser);
    }
    let groups = rest
        .first()
        .map(|g| {
            g.split(',')
                .map(str::trim)
                .filter(|g| !g.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    Ok(TokenEntry {
        token: token.clone(),
        identity: Identity {
            user: user.clone(),
            uid: uid.clone(),
            groups,
        },
    })
}

/// One CSV record as Go's encoding/csv reads it with TrimLeadingSpace: commas
/// separate, double quotes enclose, `""` inside quotes is a quote.
fn split_csv(line: &str) -> Result<Vec<String>, LineProblem> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.next_if(|c| *c == ' ' || *c == '\t').is_some() {}
        let mut field = String::new();
        if chars.next_if_eq(&'"').is_some() {
            loop {
                match chars.next() {
                    Some('"') if chars.next_if_eq(&'"').is_some() => field.push('"'),
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => return Err(LineProblem::UnclosedQuote),
                }
            }
            if chars.peek().is_some_and(|c| *c != ',') {
                return Err(LineProblem::TextAfterQuote);
            }
        } else {
            while let Some(c) = chars.next_if(|c| *c != ',') {
                if c == '"' {
                    return Err(LineProblem::QuoteInUnquotedField);
                }
                field.push(c);
            }
        }
        fields.push(field);
        if chars.next().is_none() {
            return Ok(fields);
        }
    }
}

/// A field as CSV needs it: quoted when it holds a separator, quote or space.
fn quoted(field: &str) -> String {
    if field.contains([',', '"', ' ', '\t']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

/// Maps bearer tokens to identities.
pub struct Authenticator {
    entries: Vec<(Vec<u8>, Arc<Identity>)>,
}

impl Authenticator {
    /// Knows the identities of `file`, with the groups upstream adds to each.
    pub fn new(file: &TokenFile) -> Self {
        let entries = file
            .entries
            .iter()
            .map(|e| {
                (
                    e.token.as_bytes().to_vec(),
                    Arc::new(e.identity.authenticated()),
                )
            })
            .collect();
        Self { entries }
    }

    /// The identity `token` stands for. Every entry is compared, each in constant
    /// time, so how long this takes says nothing about which one matched, or how
    /// much of a guess was right.
    pub fn authenticate(&self, token: &str) -> Option<Arc<Identity>> {
        let mut found = None;
        for (known, identity) in &self.entries {
            if constant_time_eq(token.as_bytes(), known) && found.is_none() {
                found = Some(identity.clone());
            }
        }
        found
    }
}

/// Compares without an early exit (only a length difference shows).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_lines_read_as_upstream_writes_them() {
        let file = TokenFile::parse(
            "t1,alice,u1,\"dev,ops\"\n\n t2, bob,u2\nt3,\"system:serviceaccount:ns:sa\",u3,\n",
        )
        .unwrap_or_default();
        let users: Vec<(&str, &str, Vec<String>)> = file
            .entries()
            .iter()
            .map(|e| {
                (
                    e.token.as_str(),
                    e.identity.user.as_str(),
                    e.identity.groups.clone(),
                )
            })
            .collect();
        assert_eq!(
            users,
            [
                ("t1", "alice", vec!["dev".to_string(), "ops".to_string()]),
                ("t2", "bob", vec![]),
                ("t3", "system:serviceaccount:ns:sa", vec![]),
            ]
        );
        let again = TokenFile::parse(&file.render()).unwrap_or_default();
        assert_eq!(again.render(), file.render(), "rendering round-trips");
        for (bad, line, problem) in [
            ("t1,alice\n", 1, LineProblem::TooFewColumns(2)),
            ("t1,a,u\nt1,b,u\n", 2, LineProblem::DuplicateToken),
            ("t1,\"a,u\n", 1, LineProblem::UnclosedQuote),
            ("t1,\"a\"b,u\n", 1, LineProblem::TextAfterQuote),
            ("t1,a\"b,u\n", 1, LineProblem::QuoteInUnquotedField),
            (",a,u\n", 1, LineProblem::EmptyTokenOrUser),
            ("\nt1, ,u\n", 2, LineProblem::EmptyTokenOrUser),
        ] {
            assert_eq!(
                TokenFile::parse(bad).err(),
                Some(LineError { line, problem }),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_bad_token_file_is_named_with_its_line() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temporary directory: {e}"));
        let path = dir.path().join("tokens.csv");
        let written = fs::write(&path, "t1,a,u\nt1,b,u\n");
        assert!(written.is_ok(), "{written:?}");
        let error = TokenFile::read(&path).err().map(|e| e.to_string());
        assert_eq!(
            error,
            Some(format!(
                "{} line 2: the token is given twice",
                path.display()
            ))
        );
    }

    #[test]
    fn identities_carry_the_groups_upstream_adds() {
        let mut file = TokenFile::default();
        let admin = file.ensure(Identity::new("root", &[MASTERS]));
        let account = file.ensure(Identity::service_account("kube-system", "robot"));
        assert_eq!(file.ensure(Identity::new("root", &[])), admin, "kept");
        let authenticator = Authenticator::new(&file);
        let groups = |token: &str| authenticator.authenticate(token).map(|i| i.groups.clone());
        assert_eq!(
            groups(&admin),
            Some(vec![MASTERS.to_string(), AUTHENTICATED.to_string()])
        );
        assert_eq!(
            groups(&account),
            Some(vec![
                "system:serviceaccounts".to_string(),
                "system:serviceaccounts:kube-system".to_string(),
                AUTHENTICATED.to_string()
            ])
        );
        assert_eq!(groups(""), None);
        assert_eq!(groups(&admin[..63]), None);
        assert_eq!(admin.len(), 64);
    }
}
