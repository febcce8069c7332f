//! Admin authentication: `Authorization: Bearer <admin.token>`, compared in constant time.
//!
//! The admin routes are disabled (404) when no admin token is configured, so a forgotten setting
//! never leaves them open.

use axum::http::{HeaderMap, header::AUTHORIZATION};
use subtle::ConstantTimeEq;

use crate::{config::Config, error::AppError};

/// Passes when the request carries the configured admin token; 404 when admin is disabled.
pub fn check_admin(cfg: &Config, headers: &HeaderMap) -> Result<(), AppError> {
    let token = cfg.admin.token.as_bytes();
    if token.is_empty() {
        return Err(AppError::NotFound);
    }
    let got = headers
        .get(AUTHORIZATION)
        .map(|v| v.as_bytes())
        .and_then(|v| v.strip_prefix(b"Bearer "))
        .unwrap_or_default();
    if bool::from(got.ct_eq(token)) {
        Ok(())
    } else {
        Err(AppError::Unauthorized)
    }
}
