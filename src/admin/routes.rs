//! Which admin path does what, who may ask, and the answers of the paths that act:
//! `POST /connections/{id}/close`, `POST /logins/{name}/close`, `POST /lame-duck`,
//! `POST /drain` and `POST /reload`. Each act is one call of [`Control`] and one audit line
//! at info naming the token that asked; the reads (`/metrics`, `/connections`...) are
//! answered in `mod.rs`.

use tracing::info;

use super::gate::Pass;
use super::http::Request;
use super::{BanOrder, Banning, Control, Made, Reloaded, Shared, JSON, TEXT};
use crate::server::conninfo::json_string as quoted;
use crate::server::Closing;

/// A request's path and method, understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Route {
    /// A path answered from what the endpoint holds (`/metrics`, `/healthz`, `/readyz`).
    Read,
    Connections,
    Reload,
    Close(u64),
    CloseLogin(String),
    LameDuck,
    Drain,
    Bans,
    Ban,
    Lift(u64),
    /// A known path asked with a method it does not take; the `Allow` header's value.
    Method(&'static str),
    NotFound,
}

/// The route of `method` on `path`.
pub(super) fn route(method: &str, path: &str) -> Route {
    let read = matches!(method, "GET" | "HEAD");
    let post = method == "POST";
    let wanted = |ok: bool, route: Route, allow: &'static str| {
        if ok {
            route
        } else {
            Route::Method(allow)
        }
    };
    match path {
        "/metrics" | "/healthz" | "/readyz" => wanted(read, Route::Read, "GET, HEAD"),
        "/connections" => wanted(read, Route::Connections, "GET, HEAD"),
        "/reload" => wanted(post, Route::Reload, "POST"),
        "/lame-duck" => wanted(post, Route::LameDuck, "POST"),
        "/drain" => wanted(post, Route::Drain, "POST"),
        "/bans" if read => Route::Bans,
        "/bans" => wanted(post, Route::Ban, "GET, HEAD, POST"),
        _ => {
            if let Some(id) = path
                .strip_prefix("/connections/")
                .and_then(|rest| rest.strip_suffix("/close"))
            {
                return match id.parse() {
                    Ok(id) => wanted(post, Route::Close(id), "POST"),
                    Err(_) => Route::NotFound,
                };
            }
            if let Some(id) = path
                .strip_prefix("/bans/")
                .and_then(|rest| rest.strip_suffix("/lift"))
            {
                return match id.parse() {
                    Ok(id) => wanted(post, Route::Lift(id), "POST"),
                    Err(_) => Route::NotFound,
                };
            }
            if let Some(login) = path
                .strip_prefix("/logins/")
                .and_then(|rest| rest.strip_suffix("/close"))
                .filter(|login| !login.is_empty() && !login.contains('/'))
            {
                return wanted(post, Route::CloseLogin(decoded(login)), "POST");
            }
            Route::NotFound
        }
    }
}

/// The answer to a request that needs the daemon's work or the gate's refusal, or
/// `None` for one `mod.rs` answers itself.
pub(super) async fn made(request: &Request, shared: &Shared) -> Option<Made> {
    let by = match shared
        .gate
        .check(&request.path, request.authorization.as_deref())
    {
        Pass::Allowed { by } => by,
        Pass::Unauthorized => {
            shared.metrics.operator.admin_unauthorized.inc();
            return Some((
                401,
                TEXT,
                b"unauthorized: this path needs Authorization: Bearer <a token of [admin] tokens_file>\n"
                    .to_vec(),
            ));
        }
    };
    let acting = matches!(
        route(&request.method, &request.path),
        Route::Reload
            | Route::Close(_)
            | Route::CloseLogin(_)
            | Route::LameDuck
            | Route::Drain
            | Route::Ban
            | Route::Lift(_)
    );
    if acting && request.has_body {
        return Some((
            400,
            TEXT,
            b"admin actions take no body: put what they need in the query (?reason=...)\n".to_vec(),
        ));
    }
    let control = &*shared.control;
    let made = match route(&request.method, &request.path) {
        Route::Connections => match shared.connections.answer(&request.query).await {
            Ok(json) => (200, JSON, json.into_bytes()),
            Err(why) => (400, TEXT, format!("{why}\n").into_bytes()),
        },
        Route::Reload => {
            let answer = reload_answer(control.reload().await);
            info!(by = &*by, status = answer.0, "admin: reload");
            answer
        }
        Route::Close(conn) => close(control, conn, &request.query, &by),
        Route::CloseLogin(login) => close_login(control, &login, &request.query, &by).await,
        Route::LameDuck => {
            let started = control.lame_duck(&by);
            info!(by = &*by, started, "admin: lame duck");
            stopping(started, "lame duck mode started\n")
        }
        Route::Drain => {
            let started = control.drain(&by);
            info!(by = &*by, started, "admin: drain");
            stopping(started, "drain started\n")
        }
        Route::Bans => (200, JSON, control.bans().into_bytes()),
        Route::Ban => ban(control, &request.query, &by),
        Route::Lift(id) => {
            let lifted = control.lift(id, &by);
            info!(by = &*by, id, lifted, "admin: lift a ban");
            match lifted {
                true => (200, TEXT, format!("ban {id} lifted\n").into_bytes()),
                false => (404, TEXT, format!("no ban has id {id}\n").into_bytes()),
            }
        }
        Route::Read | Route::Method(_) | Route::NotFound => return None,
    };
    Some(made)
}

/// 200 when the act began now, 409 when it (or the drain) had begun already.
fn stopping(started: bool, text: &str) -> Made {
    if started {
        (200, TEXT, text.as_bytes().to_vec())
    } else {
        (
            409,
            TEXT,
            b"already leaving: lame duck mode or the drain has begun\n".to_vec(),
        )
    }
}

/// The `reason` of an act's query, made safe to show a client: one line, printable, at
/// most 200 characters.
fn reason_of(query: &str) -> Option<String> {
    let text: String = param(query, "reason")?
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    let text = text.trim().to_owned();
    (!text.is_empty()).then_some(text)
}

/// The value of `key` in a query, decoded.
fn param(query: &str, key: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, value)| decoded(value))
}

/// `POST /bans?login=NAME|address=ADDR[&for=DURATION][&reason=TEXT]` (for: 1h by default).
fn ban(control: &dyn Control, query: &str, by: &str) -> Made {
    let bad = |why: &str| (400, TEXT, format!("{why}\n").into_bytes());
    let target = match (param(query, "login"), param(query, "address")) {
        (Some(login), None) if !login.is_empty() => Banning::Login(login),
        (None, Some(address)) if !address.is_empty() => Banning::Address(address),
        _ => return bad("POST /bans takes login=NAME or address=ADDR (one of them), for=DURATION (1h by default) and reason=TEXT"),
    };
    let lasting = match param(query, "for") {
        None => std::time::Duration::from_secs(3600),
        Some(text) => match humantime::parse_duration(&text) {
            Ok(d) => d,
            Err(_) => return bad("for= is a duration such as 30m, 12h or 7d"),
        },
    };
    let order = BanOrder {
        target,
        lasting,
        reason: reason_of(query),
    };
    match control.ban(order, by) {
        Ok(json) => (200, JSON, json.into_bytes()),
        Err(e) => bad(&e.to_string()),
    }
}

fn close(control: &dyn Control, conn: u64, query: &str, by: &str) -> Made {
    let reason = reason_of(query);
    match control.close(conn, reason.as_deref(), by) {
        None => (
            404,
            TEXT,
            format!("no open connection has id {conn}\n").into_bytes(),
        ),
        Some(closing) => (200, JSON, format!("{}\n", json(&[closing])).into_bytes()),
    }
}

/// Closes the login's connections here; in a cluster, when none is here, sends the kick
/// to the node that holds it (202: that node closes it, as this one would have).
async fn close_login(control: &dyn Control, login: &str, query: &str, by: &str) -> Made {
    let reason = reason_of(query);
    let closed = control.close_login(login, reason.as_deref(), by);
    if !closed.is_empty() {
        return (200, JSON, format!("{}\n", json(&closed)).into_bytes());
    }
    match control.forward_kick(login, reason.as_deref(), by).await {
        Some(node) => (
            202,
            JSON,
            format!(
                "{{\"forwarded\":{{\"login\":{},\"node\":{}}}}}\n",
                quoted(login),
                quoted(&node)
            )
            .into_bytes(),
        ),
        None => (
            404,
            TEXT,
            format!("no open connection is logged in as {login:?}\n").into_bytes(),
        ),
    }
}

/// `{"closed":[{"id":N,"login":"…"}],"already_closing":[{"id":N,"reason":"…"}]}`.
fn json(closings: &[Closing]) -> String {
    let (mut now, mut already) = (Vec::new(), Vec::new());
    for closing in closings {
        match closing {
            Closing::Now { conn, login } => now.push(match login {
                Some(login) => format!("{{\"id\":{conn},\"login\":{}}}", quoted(login)),
                None => format!("{{\"id\":{conn},\"login\":null}}"),
            }),
            Closing::Already { conn, reason } => already.push(format!(
                "{{\"id\":{conn},\"reason\":\"{}\"}}",
                reason.label()
            )),
        }
    }
    format!(
        "{{\"closed\":[{}],\"already_closing\":[{}]}}",
        now.join(","),
        already.join(",")
    )
}

/// The answer to `POST /reload`: what the reload applied, or why it did not.
pub(super) fn reload_answer(reloaded: Reloaded) -> Made {
    let (status, text) = match reloaded {
        Reloaded::Applied(applied) => (200, format!("reloaded: applied {applied}\n")),
        Reloaded::Failed(why) => (
            422,
            format!("reload failed, the settings in force stay: {why}\n"),
        ),
        Reloaded::NotTried(why) => (503, format!("reload not tried: {why}\n")),
    };
    (status, TEXT, text.into_bytes())
}

/// `%XX` escapes decoded (`+` is a space); invalid escapes stay as they are.
fn decoded(value: &str) -> String {
    crate::server::percent_decoded(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_methods_route() {
        assert_eq!(route("POST", "/connections/17/close"), Route::Close(17));
        assert_eq!(route("GET", "/connections/17/close"), Route::Method("POST"));
        assert_eq!(route("POST", "/connections/x/close"), Route::NotFound);
        assert_eq!(
            route("POST", "/logins/b%C3%B6b/close"),
            Route::CloseLogin("böb".into())
        );
        assert_eq!(route("POST", "/logins//close"), Route::NotFound);
        assert_eq!(route("POST", "/lame-duck"), Route::LameDuck);
        assert_eq!(route("GET", "/drain"), Route::Method("POST"));
        assert_eq!(route("POST", "/metrics"), Route::Method("GET, HEAD"));
        assert_eq!(route("GET", "/nope"), Route::NotFound);
        assert_eq!(route("GET", "/bans"), Route::Bans);
        assert_eq!(route("POST", "/bans"), Route::Ban);
        assert_eq!(route("DELETE", "/bans"), Route::Method("GET, HEAD, POST"));
        assert_eq!(route("POST", "/bans/3/lift"), Route::Lift(3));
    }

    #[test]
    fn reasons_are_one_printable_line() {
        assert_eq!(reason_of("reason=spam+links"), Some("spam links".into()));
        assert_eq!(reason_of("x=1&reason=a%0Ab%1B"), Some("ab".into()));
        assert_eq!(reason_of("reason=%0A"), None);
        assert_eq!(reason_of("").as_deref(), None);
        assert_eq!(
            reason_of(&format!("reason={}", "x".repeat(500)))
                .unwrap()
                .len(),
            200
        );
    }
}
