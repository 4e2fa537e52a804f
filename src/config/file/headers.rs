//! `set_header` and `add_header` of a `[[listener.route]]`, and `[map.NAME]` tables, as
//! written; compiled into [`crate::config::headers`] templates at load.
//!
//! ```toml
//! [map.connection_upgrade]
//! source = "$http_upgrade"
//! values = { "" = "close" }
//! default = "upgrade"
//!
//! [[listener.route]]
//! set_header = { "X-Real-IP" = "$remote_addr", "X-Request" = "$request_uri" }
//! add_header = { "X-Frame-Options" = "DENY", "X-Served-By" = { value = "tideway", always = true } }
//! ```

use super::Ctx;
use crate::config::headers::{self, Maps, RouteHeaders};
use crate::config::ConfigError;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use toml::Spanned;

/// A TOML table whose entries keep their written order (header order, a map's regexes).
pub(super) struct Ordered<V>(Vec<(String, V)>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Ordered<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entries<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for Entries<V> {
            type Value = Ordered<V>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a table of header names to values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, V>()? {
                    out.push((k, v));
                }
                Ok(Ordered(out))
            }
        }
        d.deserialize_map(Entries(std::marker::PhantomData))
    }
}

/// An `add_header` value: text, or `{ value, always }`.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum Added {
    Text(String),
    Full(AddedFull),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AddedFull {
    value: String,
    #[serde(default)]
    always: bool,
}

/// `[map.NAME]`: nginx's `map SOURCE $NAME { ... }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MapSection {
    source: String,
    #[serde(default = "no_values")]
    values: Ordered<String>,
    default: Option<String>,
}

fn no_values() -> Ordered<String> {
    Ordered(Vec::new())
}

/// The `[map.NAME]` tables, compiled.
pub(super) fn maps(
    cx: &Ctx<'_>,
    sections: &BTreeMap<String, Spanned<MapSection>>,
) -> Result<Maps, ConfigError> {
    let mut out = Maps::new();
    for (name, sp) in sections {
        let m = sp.get_ref();
        let def = headers::map(name, &m.source, &m.values.0, m.default.as_deref())
            .map_err(|e| cx.err(sp.span(), format!("map {name:?}: {e}")))?;
        out.insert(def.name.clone(), Arc::new(def));
    }
    Ok(out)
}

/// A route's headers: its own `set_header` and `add_header` where it has them, its parent's
/// otherwise (each replaces all inherited ones, as nginx's levels do).
pub(super) fn route(
    cx: &Ctx<'_>,
    set: &Option<Spanned<Ordered<String>>>,
    add: &Option<Spanned<Ordered<Added>>>,
    parent: Option<&Arc<RouteHeaders>>,
) -> Result<Option<Arc<RouteHeaders>>, ConfigError> {
    if set.is_none() && add.is_none() {
        return Ok(parent.cloned());
    }
    let mut h = parent.map(|p| RouteHeaders::clone(p)).unwrap_or_default();
    if let Some(sp) = set {
        h.set.clear();
        for (name, value) in &sp.get_ref().0 {
            let e = |e: String| cx.err(sp.span(), format!("set_header {name:?}: {e}"));
            let t = headers::compile(value, &cx.maps).map_err(e)?;
            h.set.extend(headers::check_set(name, t).map_err(e)?);
        }
    }
    if let Some(sp) = add {
        h.add.clear();
        for (name, value) in &sp.get_ref().0 {
            let e = |e: String| cx.err(sp.span(), format!("add_header {name:?}: {e}"));
            let (value, always) = match value {
                Added::Text(v) => (v, false),
                Added::Full(f) => (&f.value, f.always),
            };
            let t = headers::compile(value, &cx.maps).map_err(e)?;
            h.add.push(headers::check_add(name, t, always).map_err(e)?);
        }
    }
    Ok((!h.set.is_empty() || !h.add.is_empty()).then(|| Arc::new(h)))
}
