//! The password file (`passfile`, `PGPASSFILE`, `~/.pgpass`): read only when private, as libpq
//! does, and matched line by line against the connection.

use std::path::Path;

use super::{ConnConfig, DEFAULT_SOCKET_DIR, Host};

impl ConnConfig {
    /// The password line of a passfile's contents that matches this connection, if any.
    pub fn password_from_passfile(&self, contents: &str) -> Option<String> {
        let host = match &self.host {
            Host::Tcp(h) => h.clone(),
            // libpq matches the default socket directory as "localhost".
            Host::Unix(dir) if dir == Path::new(DEFAULT_SOCKET_DIR) => "localhost".to_owned(),
            Host::Unix(dir) => dir.to_string_lossy().into_owned(),
        };
        let port = self.port.to_string();
        let wanted = [host.as_str(), port.as_str(), &self.dbname, &self.user];
        contents.lines().find_map(|line| {
            let line = line.trim_end_matches('\r');
            if line.starts_with('#') || line.trim().is_empty() {
                return None;
            }
            let fields = split_passfile_line(line)?;
            let matches = fields[..4]
                .iter()
                .zip(wanted)
                .all(|(field, want)| field == "*" || field == want);
            matches.then(|| fields[4].clone())
        })
    }
}

/// Read a passfile the way libpq does: missing is fine, and a file others can read is ignored.
pub(super) fn read_passfile(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                "password file has group or world access and is ignored; chmod 0600 it"
            );
            return None;
        }
    }
    match std::fs::read_to_string(path) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read password file");
            None
        }
    }
}

/// `host:port:db:user:password`, with `\:` and `\\` escapes; `None` for a malformed line.
fn split_passfile_line(line: &str) -> Option<[String; 5]> {
    let mut fields: Vec<String> = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    fields.last_mut()?.push(next);
                }
            }
            // The password is the rest of the line, colons and all.
            ':' if fields.len() < 5 => fields.push(String::new()),
            _ => fields.last_mut()?.push(c),
        }
    }
    fields.try_into().ok()
}
