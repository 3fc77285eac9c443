//! Capabilities: one module per WIT capability interface. Each module owns
//! its backend, its scope rules and how its requests are described to a
//! human; none reaches its backend without passing the consent Gate (see
//! `host`).

pub mod mail;
