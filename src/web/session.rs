//! Signing in to the board, and the checks every state-changing request
//! passes.
//!
//! The session *is* the API token, kept in a cookie the page's script cannot
//! read (`HttpOnly`) and that the browser never sends on a request started
//! by another site (`SameSite=Strict`). Nothing is stored server-side, so a
//! SIGHUP that removes a token ends its sessions at once, and several
//! daemons behind one address accept each other's sessions.
//!
//! SameSite is the first defence against cross-site request forgery, not
//! the only one: every POST must also carry a CSRF token, an HMAC of the
//! session under the daemon's secret (embedded in the page, sent back in
//! the `X-CSRF-Token` header or a form field), and a browser-set `Origin`
//! (or `Referer`, or `Sec-Fetch-Site`) that names another site is refused.
//! The sign-in form, before there is a session, is protected the same way
//! with a random nonce in a short-lived cookie.

use axum::extract::FromRequestParts;
use axum::http::header::{COOKIE, HOST, ORIGIN, REFERER};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::api::auth::{configured_tokens, identify, Principal};
use crate::api::error::ApiError;
use crate::api::ApiState;

/// The session cookie: the API token, base64url-encoded (a token may hold
/// characters a cookie value may not).
pub const SESSION_COOKIE: &str = "cadence_session";
/// The sign-in form's nonce, until the form is posted.
pub const LOGIN_COOKIE: &str = "cadence_login";
/// Where the page's script puts the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// A signed-in caller.
#[derive(Clone, Debug)]
pub struct Session {
    pub who: Principal,
    token: String,
}

impl Session {
    /// The caller named by the session cookie, if its token is (still) one
    /// the config names.
    pub fn from_headers(headers: &HeaderMap, state: &ApiState) -> Option<Session> {
        let raw = cookie(headers, SESSION_COOKIE)?;
        let token = String::from_utf8(URL_SAFE_NO_PAD.decode(raw).ok()?).ok()?;
        let who = identify(&token, &configured_tokens(&state.engine.config(), &*state.env))?;
        Some(Session { who, token })
    }

    /// The CSRF token the page must send back with every POST.
    pub fn csrf(&self, secret: &[u8]) -> String {
        sign(secret, "session", &self.token)
    }

    /// Is `presented` this session's CSRF token? (Constant time.)
    pub fn csrf_ok(&self, secret: &[u8], presented: Option<&str>) -> bool {
        presented.is_some_and(|p| verify(secret, "session", &self.token, p))
    }

    /// Who is signed in, for the page header.
    pub fn label(&self) -> String {
        match &self.who {
            Principal::Manager => "manager".to_string(),
            Principal::Rep(id) => format!("rep {id}"),
        }
    }
}

/// Any board request that needs a session: 401 without one.
impl FromRequestParts<ApiState> for Session {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        Session::from_headers(&parts.headers, state).ok_or_else(signed_out)
    }
}

/// A session whose request passed the CSRF checks: the extractor for every
/// state-changing board endpoint driven by the page's script.
pub struct Checked(pub Session);

impl FromRequestParts<ApiState> for Checked {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let session = Session::from_headers(&parts.headers, state).ok_or_else(signed_out)?;
        if !same_origin(&parts.headers) {
            return Err(forbidden("cross-site request refused"));
        }
        let presented = parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
        if !session.csrf_ok(state.engine.secret(), presented) {
            return Err(forbidden("missing or wrong CSRF token: reload the page"));
        }
        Ok(Checked(session))
    }
}

pub fn signed_out() -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "not signed in: open / and sign in with your API token")
}

pub fn forbidden(message: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
}

/// A fresh nonce for the sign-in form and the token that goes with it.
pub fn login_nonce(secret: &[u8]) -> (String, String) {
    let nonce = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 18]>());
    let csrf = sign(secret, "login", &nonce);
    (nonce, csrf)
}

/// Does the posted sign-in form carry the token for the nonce in its cookie?
pub fn login_ok(headers: &HeaderMap, secret: &[u8], presented: &str) -> bool {
    cookie(headers, LOGIN_COOKIE).is_some_and(|nonce| verify(secret, "login", nonce, presented))
}

fn mac(secret: &[u8], purpose: &str, data: &str) -> Hmac<Sha256> {
    let mut m = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    m.update(b"cadence-board-v1:");
    m.update(purpose.as_bytes());
    m.update(b":");
    m.update(data.as_bytes());
    m
}

fn sign(secret: &[u8], purpose: &str, data: &str) -> String {
    URL_SAFE_NO_PAD.encode(mac(secret, purpose, data).finalize().into_bytes())
}

fn verify(secret: &[u8], purpose: &str, data: &str, presented: &str) -> bool {
    match URL_SAFE_NO_PAD.decode(presented.trim()) {
        Ok(tag) => mac(secret, purpose, data).verify_slice(&tag).is_ok(),
        Err(_) => false,
    }
}

/// The value of cookie `name`, if sent.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// False when the browser says the request comes from another site.
/// Browsers set `Origin` on every POST they send; a client that sends none
/// (curl) still needs the CSRF token, which only the page knows.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let host = headers.get(HOST).and_then(|v| v.to_str().ok()).map(str::to_ascii_lowercase);
    if headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()).is_some_and(|s| s == "cross-site" || s == "same-site") {
        return false;
    }
    let origin_host = |url: &str| -> Option<String> {
        let rest = url.split_once("://")?.1;
        Some(rest.split(['/', '?', '#']).next().unwrap_or("").to_ascii_lowercase())
    };
    let claimed = match (headers.get(ORIGIN), headers.get(REFERER)) {
        (Some(o), _) => Some(o.to_str().ok().and_then(origin_host)),
        (None, Some(r)) => Some(r.to_str().ok().and_then(origin_host)),
        (None, None) => None,
    };
    match claimed {
        None => true,
        // `Origin: null` (a sandboxed frame, a file) or unreadable: refuse.
        Some(None) => false,
        Some(Some(h)) => host.is_some_and(|host| host == h),
    }
}

/// `Set-Cookie` values. `secure` adds `Secure` (behind a TLS proxy).
pub fn set_cookie(name: &str, value: &str, secure: bool) -> HeaderValue {
    let s = format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict{}", if secure { "; Secure" } else { "" });
    HeaderValue::from_str(&s).expect("cookie values are base64url")
}

pub fn clear_cookie(name: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("{name}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")).expect("ascii")
}

/// The session cookie's value for `token`.
pub fn session_value(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(token.as_bytes())
}

/// Served over TLS by a proxy in front of the daemon?
pub fn behind_tls(headers: &HeaderMap) -> bool {
    headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()).is_some_and(|p| p.eq_ignore_ascii_case("https"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn reads_cookies_among_others() {
        let h = headers(&[("cookie", "a=1; cadence_session=abc; b=2"), ("cookie", "cadence_login=n1")]);
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&h, LOGIN_COOKIE), Some("n1"));
        assert_eq!(cookie(&h, "missing"), None);
        assert_eq!(cookie(&headers(&[("cookie", "cadence_session=")]), SESSION_COOKIE), None);
    }

    #[test]
    fn csrf_tokens_are_bound_to_the_session_and_the_secret() {
        let s = Session { who: Principal::Manager, token: "tok-1".into() };
        let other = Session { who: Principal::Manager, token: "tok-2".into() };
        let t = s.csrf(b"secret");
        assert!(s.csrf_ok(b"secret", Some(&t)));
        assert!(!other.csrf_ok(b"secret", Some(&t)));
        assert!(!s.csrf_ok(b"other-secret", Some(&t)));
        assert!(!s.csrf_ok(b"secret", None));
        assert!(!s.csrf_ok(b"secret", Some("")));
        assert!(!s.csrf_ok(b"secret", Some("not base64!")));
        let (nonce, login) = login_nonce(b"secret");
        let h = headers(&[("cookie", &format!("{LOGIN_COOKIE}={nonce}"))]);
        assert!(login_ok(&h, b"secret", &login));
        assert!(!login_ok(&h, b"secret", &t));
        assert!(!login_ok(&HeaderMap::new(), b"secret", &login));
    }

    #[test]
    fn refuses_requests_another_site_started() {
        let host = ("host", "127.0.0.1:8080");
        assert!(same_origin(&headers(&[host])));
        assert!(same_origin(&headers(&[host, ("origin", "http://127.0.0.1:8080")])));
        assert!(same_origin(&headers(&[host, ("referer", "http://127.0.0.1:8080/?rep=nik")])));
        assert!(same_origin(&headers(&[host, ("sec-fetch-site", "same-origin")])));
        assert!(!same_origin(&headers(&[host, ("origin", "http://evil.example")])));
        assert!(!same_origin(&headers(&[host, ("origin", "http://127.0.0.1:8081")])));
        assert!(!same_origin(&headers(&[host, ("origin", "null")])));
        assert!(!same_origin(&headers(&[host, ("referer", "https://evil.example/x")])));
        assert!(!same_origin(&headers(&[host, ("sec-fetch-site", "cross-site")])));
        assert!(!same_origin(&headers(&[("origin", "http://127.0.0.1:8080")])), "no Host to compare with");
    }
}
