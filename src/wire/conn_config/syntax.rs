//! The two ways to write a connection string, `key=value …` and `postgres://…` URLs, read into
//! raw options, and the number formats libpq accepts in them.

use std::time::Duration;

use super::ConnConfigError;

/// A whole number as libpq reads one (surrounding blanks allowed).
pub(super) fn whole_number(
    v: &str,
    key: &'static str,
    expected: &'static str,
) -> Result<i64, ConnConfigError> {
    v.trim()
        .parse::<i64>()
        .map_err(|_| ConnConfigError::InvalidValue {
            key,
            value: v.to_owned(),
            expected,
        })
}

/// Seconds for a keepalive setting; zero or less keeps the system default (libpq).
pub(super) fn positive_seconds(
    v: Option<String>,
    key: &'static str,
) -> Result<Option<Duration>, ConnConfigError> {
    let Some(v) = v else { return Ok(None) };
    Ok(match whole_number(&v, key, "whole seconds")? {
        n if n <= 0 => None,
        n => Some(Duration::from_secs(n.unsigned_abs())),
    })
}

pub(super) fn quote_value(v: &str) -> String {
    if !v.is_empty() && !v.contains(|c: char| c.is_whitespace() || c == '\'' || c == '\\') {
        return v.to_owned();
    }
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// libpq's `key=value` syntax: values may be single-quoted; `\` escapes the next character.
pub(super) fn parse_key_values(s: &str) -> Result<Vec<(String, String)>, ConnConfigError> {
    let bytes: Vec<(usize, char)> = s.char_indices().collect();
    let mut i = 0;
    let mut out = Vec::new();
    let at = |i: usize| bytes.get(i).map_or(s.len(), |(b, _)| *b);
    let skip_ws = |i: &mut usize| {
        while bytes.get(*i).is_some_and(|(_, c)| c.is_whitespace()) {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i >= bytes.len() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(&(_, c)) = bytes.get(i) {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            i += 1;
        }
        skip_ws(&mut i);
        if bytes.get(i).map(|(_, c)| *c) != Some('=') {
            return Err(ConnConfigError::Syntax {
                at: at(i),
                reason: "expected \"=\" after the option name",
            });
        }
        i += 1;
        skip_ws(&mut i);
        let mut value = String::new();
        if bytes.get(i).map(|(_, c)| *c) == Some('\'') {
            i += 1;
            loop {
                match bytes.get(i).map(|(_, c)| *c) {
                    None => {
                        return Err(ConnConfigError::Syntax {
                            at: at(i),
                            reason: "unterminated quoted value",
                        });
                    }
                    Some('\\') => {
                        i += 1;
                        match bytes.get(i) {
                            Some(&(_, c)) => value.push(c),
                            None => {
                                return Err(ConnConfigError::Syntax {
                                    at: at(i),
                                    reason: "unterminated quoted value",
                                });
                            }
                        }
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(c) => value.push(c),
                }
                i += 1;
            }
        } else {
            while let Some(&(_, c)) = bytes.get(i) {
                if c.is_whitespace() {
                    break;
                }
                if c == '\\' {
                    i += 1;
                    if let Some(&(_, next)) = bytes.get(i) {
                        value.push(next);
                    }
                } else {
                    value.push(c);
                }
                i += 1;
            }
        }
        out.push((key, value));
    }
}

/// `postgres[ql]://[user[:password]@][host][:port][/dbname][?key=value&...]`.
pub(super) fn parse_url(s: &str) -> Result<Vec<(String, String)>, ConnConfigError> {
    let scheme_len = s.find("://").map_or(0, |i| i + 3);
    let rest = &s[scheme_len..];
    let (before_query, query) = match rest.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match before_query.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (before_query, None),
    };
    let mut out = Vec::new();
    let offset = |part: &str| scheme_len + (part.as_ptr() as usize - rest.as_ptr() as usize);
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    if let Some(userinfo) = userinfo {
        let (user, password) = match userinfo.split_once(':') {
            Some((u, p)) => (u, Some(p)),
            None => (userinfo, None),
        };
        if !user.is_empty() {
            out.push(("user".to_owned(), percent_decode(user, offset(user))?));
        }
        if let Some(p) = password {
            out.push(("password".to_owned(), percent_decode(p, offset(p))?));
        }
    }
    // `host1:port1,host2:port2`: one host/port pair per comma-separated element.
    let mut hosts = Vec::new();
    let mut ports = Vec::new();
    for hostport in hostport.split(',') {
        let (host, port) = url_host_port(hostport, offset(hostport))?;
        hosts.push(host);
        ports.push(port.unwrap_or_default());
    }
    if hosts.iter().any(|h| !h.is_empty()) {
        out.push(("host".to_owned(), hosts.join(",")));
    }
    if ports.iter().any(|p| !p.is_empty()) {
        out.push(("port".to_owned(), ports.join(",")));
    }
    if let Some(db) = path.filter(|p| !p.is_empty()) {
        out.push(("dbname".to_owned(), percent_decode(db, offset(db))?));
    }
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(ConnConfigError::Syntax {
                at: offset(pair),
                reason: "expected key=value in the URL query",
            });
        };
        let key = percent_decode(k, offset(k))?;
        let value = percent_decode(v, offset(v))?;
        // libpq's JDBC-compatible spelling.
        if key == "ssl" && value == "true" {
            out.push(("sslmode".to_owned(), "require".to_owned()));
        } else {
            out.push((key, value));
        }
    }
    Ok(out)
}

/// One `host[:port]` (or `[v6addr][:port]`) element of a URL's authority, `at` its offset.
pub(super) fn url_host_port(
    hostport: &str,
    at: usize,
) -> Result<(String, Option<&str>), ConnConfigError> {
    let offset = |part: &str| at + (part.as_ptr() as usize - hostport.as_ptr() as usize);
    if let Some(v6) = hostport.strip_prefix('[') {
        let Some((addr, after)) = v6.split_once(']') else {
            return Err(ConnConfigError::Syntax {
                at,
                reason: "missing \"]\" after an IPv6 address",
            });
        };
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => {
                return Err(ConnConfigError::Syntax {
                    at: offset(after),
                    reason: "expected \":\" and a port after the IPv6 address",
                });
            }
        };
        return Ok((addr.to_owned(), port));
    }
    match hostport.rsplit_once(':') {
        Some((h, p)) => Ok((percent_decode(h, offset(h))?, Some(p))),
        None => Ok((percent_decode(hostport, at)?, None)),
    }
}

pub(super) fn percent_decode(s: &str, at: usize) -> Result<String, ConnConfigError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match hex {
                Some(0) | None => {
                    return Err(ConnConfigError::Syntax {
                        at: at + i,
                        reason: "invalid percent-encoding (need %XX, not %00)",
                    });
                }
                Some(byte) => out.push(byte),
            }
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ConnConfigError::Syntax {
        at,
        reason: "percent-decoded text is not UTF-8",
    })
}
