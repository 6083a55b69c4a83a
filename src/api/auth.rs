//! Who is calling: a rep (sees and changes only the leads it owns) or the
//! manager (sees all).
//!
//! Tokens are read from the environment variables the config names on every
//! request, so a SIGHUP that adds a rep or renames a variable takes effect
//! at once. The presented token is compared with every configured token,
//! always all of them, on SHA-256 digests (equal length) with `subtle`: the
//! time taken says nothing about which token, or how much of one, matched.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

use super::error::ApiError;
use super::ApiState;
use crate::config::Config;

/// The authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    Manager,
    Rep(String),
}

impl Principal {
    /// May this caller see a lead owned by `owner`?
    pub fn may_see(&self, owner: Option<&str>) -> bool {
        match self {
            Principal::Manager => true,
            Principal::Rep(id) => owner == Some(id.as_str()),
        }
    }

    /// The owner list endpoints filter by (`None`: everyone's leads).
    pub fn owner_filter(&self) -> Option<&str> {
        match self {
            Principal::Manager => None,
            Principal::Rep(id) => Some(id),
        }
    }
}

/// Every configured token with its holder. Unset variables give no token.
pub fn configured_tokens(cfg: &Config, env: &dyn Fn(&str) -> Option<String>) -> Vec<(Principal, String)> {
    let mut out = Vec::new();
    if let Some(t) = cfg.daemon.manager_token_env.as_deref().and_then(env) {
        out.push((Principal::Manager, t));
    }
    for rep in &cfg.reps {
        if let Some(t) = rep.api_token_env.as_deref().and_then(env) {
            out.push((Principal::Rep(rep.id.clone()), t));
        }
    }
    out
}

/// The holder of `presented`, checking every token in constant time.
pub fn identify(presented: &str, tokens: &[(Principal, String)]) -> Option<Principal> {
    let wanted = Sha256::digest(presented.as_bytes());
    let mut found = Choice::from(0);
    let mut index = 0u64;
    for (i, (_, token)) in tokens.iter().enumerate() {
        let eq = Sha256::digest(token.as_bytes()).as_slice().ct_eq(wanted.as_slice());
        index = u64::conditional_select(&index, &(i as u64), eq);
        found |= eq;
    }
    bool::from(found).then(|| tokens[index as usize].0.clone())
}

impl FromRequestParts<ApiState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let presented = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .filter(|t| !t.is_empty())
            .ok_or_else(ApiError::unauthorized)?;
        let tokens = configured_tokens(&state.engine.config(), &*state.env);
        identify(presented, &tokens).ok_or_else(ApiError::unauthorized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifies_each_holder_and_refuses_the_rest() {
        let tokens = vec![
            (Principal::Manager, "m-token".to_string()),
            (Principal::Rep("nik".into()), "nik-token".to_string()),
            (Principal::Rep("ana".into()), "ana-token".to_string()),
        ];
        assert_eq!(identify("m-token", &tokens), Some(Principal::Manager));
        assert_eq!(identify("nik-token", &tokens), Some(Principal::Rep("nik".into())));
        assert_eq!(identify("ana-token", &tokens), Some(Principal::Rep("ana".into())));
        assert_eq!(identify("nik-toke", &tokens), None);
        assert_eq!(identify("nik-token ", &tokens), None);
        assert_eq!(identify("", &tokens), None);
        assert_eq!(identify("anything", &[]), None);
    }

    #[test]
    fn reps_see_only_their_own_leads() {
        let nik = Principal::Rep("nik".into());
        assert!(nik.may_see(Some("nik")));
        assert!(!nik.may_see(Some("ana")));
        assert!(!nik.may_see(None));
        assert!(Principal::Manager.may_see(Some("ana")));
        assert!(Principal::Manager.may_see(None));
    }
}
