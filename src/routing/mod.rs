//! Routing, nginx's model: a listener holds servers chosen by Host ([`host`]), each holding
//! locations chosen by path ([`location`]); [`table::Table`] puts them together and picks
//! the route of a request. The path is matched as nginx's `$uri` ([`uri`]), which also
//! rewrites the target for a `proxy_pass` with a URI part.
//!
//! Pure and synchronous: no I/O, no allocation for a listener with a single route.
//! Imports: `config` only.

pub mod host;
pub mod location;
pub mod table;
pub mod uri;

pub use table::{Pick, RouteInfo, Table};

#[cfg(test)]
mod tests;
