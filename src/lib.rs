//! cadence: an email-cadence automation daemon for sales teams.
//!
//! # Layout
//!
//! Data flows one way: files and requests come in at the edges (`cli`, `api`,
//! `inbox`), become [`domain`] values, go through the [`engine`], and leave
//! through the [`store`] and the [`mailer`]. [`schedule`] and
//! [`inbox::classify`] are pure functions; everything that reads the time
//! takes a [`clock::Clock`]. See `docs/ARCHITECTURE.md`.

pub mod api;
pub mod cli;
pub mod clock;
pub mod config;
pub mod domain;
pub mod engine;
pub mod inbox;
pub mod mailer;
pub mod ops;
pub mod report;
pub mod schedule;
pub mod store;
pub mod templates;
pub mod web;
