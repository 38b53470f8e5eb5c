//! Who may use which admin path: without `[admin] tokens_file` every path is open (the
//! endpoint is then meant for loopback); with it, every path but `[admin] open_paths`
//! needs a bearer token the file holds. Replaced whole at a reload.

use std::sync::{Arc, RwLock};

use super::tokens::{bearer, Tokens};

/// The rules in force, swapped whole by a reload.
pub struct Gate {
    rules: RwLock<Arc<Rules>>,
}

/// One version of the rules.
struct Rules {
    /// `None`: no authentication.
    tokens: Option<Arc<Tokens>>,
    /// Paths served without a token when there are tokens.
    open: Vec<String>,
}

/// What the gate says of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pass {
    /// Served; `by` names the token presented (for the audit log), or says there was none.
    Allowed { by: Arc<str> },
    /// Refused with 401: the path needs a token and none that the file holds came.
    Unauthorized,
}

/// The `by` of a request that presented no token (or when there are no tokens).
pub const ANONYMOUS: &str = "-";

impl Gate {
    pub fn new(tokens: Option<Tokens>, open: Vec<String>) -> Gate {
        Gate {
            rules: RwLock::new(Arc::new(Rules {
                tokens: tokens.map(Arc::new),
                open,
            })),
        }
    }

    /// New rules (a reload), for requests read from now on.
    pub fn set(&self, tokens: Option<Tokens>, open: Vec<String>) {
        *self.rules.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Rules {
            tokens: tokens.map(Arc::new),
            open,
        });
    }

    /// Whether tokens are in force.
    pub fn is_on(&self) -> bool {
        self.rules().tokens.is_some()
    }

    /// Whether a request for `path` with this `Authorization` header value may be served.
    pub fn check(&self, path: &str, authorization: Option<&str>) -> Pass {
        let rules = self.rules();
        let Some(tokens) = &rules.tokens else {
            return Pass::Allowed {
                by: ANONYMOUS.into(),
            };
        };
        let matched = authorization
            .and_then(bearer)
            .and_then(|token| tokens.check(token.as_bytes()));
        match matched {
            Some(by) => Pass::Allowed { by },
            None if rules.open.iter().any(|open| open == path) => Pass::Allowed {
                by: ANONYMOUS.into(),
            },
            None => Pass::Unauthorized,
        }
    }

    fn rules(&self) -> Arc<Rules> {
        self.rules.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_paths_need_no_token_and_the_rest_need_one_the_file_holds() {
        let tokens = Tokens::parse("[tokens]\nops = \"0123456789abcdef01\"\n", "t").unwrap();
        let gate = Gate::new(Some(tokens), vec!["/healthz".into()]);
        assert!(gate.is_on());
        let anonymous = Pass::Allowed {
            by: ANONYMOUS.into(),
        };
        assert_eq!(gate.check("/healthz", None), anonymous);
        assert_eq!(gate.check("/metrics", None), Pass::Unauthorized);
        assert_eq!(
            gate.check("/metrics", Some("Bearer nope")),
            Pass::Unauthorized
        );
        let ops = Pass::Allowed { by: "ops".into() };
        assert_eq!(
            gate.check("/metrics", Some("Bearer 0123456789abcdef01")),
            ops
        );
        assert_eq!(
            gate.check("/healthz", Some("Bearer 0123456789abcdef01")),
            ops
        );
        gate.set(None, Vec::new());
        assert_eq!(gate.check("/metrics", None), anonymous);
    }
}
