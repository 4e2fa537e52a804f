//! nginx's access control: `allow` and `deny` are read where nginx reads them (http, server
//! and location blocks; see [`super::routes`], which builds each route's list), `satisfy` with
//! them; whatever tideway does not implement (`auth_basic`, `auth_request`, `limit_except`,
//! `allow`/`deny` in a stream server) fails the import with file:line, since dropping it would
//! expose what nginx protected.

use super::parse::Directive;
use crate::config::{LocationConfig, ServerConfig};

/// Access control tideway reads in http, server and location blocks: `allow`/`deny` (a
/// route's `access`), and `satisfy`, which changes nothing when they are the only access
/// checks (auth fails the import).
pub const ACCESS: [&str; 3] = ["allow", "deny", "satisfy"];

/// Access control tideway does not implement: never dropped, the import fails (issue 21).
/// `limit_except` is access control by method.
pub const REFUSED_ACCESS: [&str; 6] = [
    "auth_basic",
    "auth_basic_user_file",
    "auth_request",
    "auth_request_set",
    "auth_jwt",
    "limit_except",
];

/// An error with file:line for each access control directive tideway does not implement, at
/// any depth, and for `allow`/`deny` where tideway does not read them (a stream server, a
/// `limit_except` or `if` block). `read`: `block` is an http, server or location block;
/// `top`: it is the file's top level.
pub fn refuse(errors: &mut Vec<String>, block: &[Directive], read: bool, top: bool) {
    for d in block {
        let name = d.name.as_str();
        if REFUSED_ACCESS.contains(&name) {
            errors.push(format!(
                "{}: \"{name}\" is access control, which tideway does not implement; remove it only if the backend enforces the same rule",
                d.at(),
            ));
        } else if ACCESS.contains(&name) && !read {
            errors.push(format!(
                "{}: \"{name}\" is access control, which tideway reads only in http, server and location blocks; remove it only if the backend enforces the same rule",
                d.at(),
            ));
        }
        let inner = match name {
            "http" => top,
            "server" => top || read,
            "location" => read,
            _ => false,
        };
        refuse(errors, d.block.as_deref().unwrap_or_default(), inner, false);
    }
}

/// The first route in `locations` with an access list: where it was defined.
fn guarded(locations: &[LocationConfig]) -> Option<&str> {
    locations.iter().find_map(|l| match &l.settings.access {
        Some(_) => Some(l.at.as_str()),
        None => guarded(&l.nested),
    })
}

/// An error for each listen (`listen`, `spoofable`, its servers) whose PROXY header's address
/// tideway would believe from anyone while a route on it has an access list: nginx checks the
/// balancer's address there, and any client that reaches the port could write the address.
pub fn refuse_spoofable<'a>(
    errors: &mut Vec<String>,
    listens: impl Iterator<Item = (&'a str, bool, &'a [ServerConfig])>,
) {
    for (listen, _, servers) in listens.filter(|l| l.1) {
        if let Some(at) = servers.iter().find_map(|s| guarded(&s.locations)) {
            errors.push(format!(
                "{at}: allow/deny on a proxy_protocol listen ({listen}) without set_real_ip_from and real_ip_header proxy_protocol: nginx checks the balancer's address, tideway would check the address in the PROXY header, which any client that reaches the port can write; add set_real_ip_from BALANCER; real_ip_header proxy_protocol;"
            ));
        }
    }
}
