//! Where the generated code finds `netabase_core`.
//!
//! Users depend on one of the Netabase crates, not necessarily on the core itself, so the
//! generated code names the core through the crate they do depend on: the first of
//! `netabase` (facade, core at `netabase::core`), `netabase-store` (core at
//! `netabase_store::core`) and `netabase-core` found in the user's `Cargo.toml`, honouring
//! renames. Without any of them it falls back to `::netabase_core`.

use proc_macro_crate::{FoundCrate, crate_name};
use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::Ident;

/// The path of the core crate as tokens (`::netabase::core`) and as the string that
/// `#[serde(crate = "...")]` takes.
pub(crate) struct CorePath {
    pub(crate) tokens: TokenStream,
    pub(crate) text: String,
}

impl CorePath {
    /// Looks up the user's dependencies.
    pub(crate) fn find() -> CorePath {
        CorePath::resolve(|package| crate_name(package).ok())
    }

    /// The core path given how each candidate package was found, in order of preference.
    fn resolve(lookup: impl Fn(&str) -> Option<FoundCrate>) -> CorePath {
        // (package name, crate name when the package is the one being compiled, path of
        // the core inside it)
        const CANDIDATES: [(&str, &str, &[&str]); 3] = [
            ("netabase", "netabase", &["core"]),
            ("netabase-store", "netabase_store", &["core"]),
            ("netabase-core", "netabase_core", &[]),
        ];
        for (package, own_name, inner) in CANDIDATES {
            let name = match lookup(package) {
                // Inside the package itself (its tests, examples and benches, or its
                // library with `extern crate self as <name>;`) the crate goes by its own
                // name.
                Some(FoundCrate::Itself) => own_name.to_owned(),
                Some(FoundCrate::Name(name)) => name,
                None => continue,
            };
            return CorePath::from_segments(&name, inner);
        }
        CorePath::from_segments("netabase_core", &[])
    }

    fn from_segments(krate: &str, inner: &[&str]) -> CorePath {
        let krate_ident = Ident::new(krate, Span::call_site());
        let inner_idents = inner.iter().map(|s| Ident::new(s, Span::call_site()));
        let tokens = quote!(:: #krate_ident #(:: #inner_idents)*);
        let mut text = format!("::{krate}");
        for segment in inner {
            text.push_str("::");
            text.push_str(segment);
        }
        CorePath { tokens, text }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(found: &[(&str, FoundCrate)]) -> (String, String) {
        let path = CorePath::resolve(|package| {
            found
                .iter()
                .find(|(name, _)| *name == package)
                .map(|(_, how)| how.clone())
        });
        (path.tokens.to_string().replace(' ', ""), path.text)
    }

    fn pair(text: &str) -> (String, String) {
        (text.to_owned(), text.to_owned())
    }

    #[test]
    fn the_facade_comes_first() {
        let found = [
            ("netabase-core", FoundCrate::Name("netabase_core".into())),
            ("netabase", FoundCrate::Name("netabase".into())),
            ("netabase-store", FoundCrate::Name("netabase_store".into())),
        ];
        assert_eq!(resolve(&found), pair("::netabase::core"));
    }

    #[test]
    fn the_store_comes_before_the_core() {
        let found = [
            ("netabase-core", FoundCrate::Name("netabase_core".into())),
            ("netabase-store", FoundCrate::Name("store".into())),
        ];
        assert_eq!(resolve(&found), pair("::store::core"));
    }

    #[test]
    fn the_core_alone_and_renamed() {
        let found = [("netabase-core", FoundCrate::Name("nb".into()))];
        assert_eq!(resolve(&found), pair("::nb"));
    }

    #[test]
    fn a_package_using_its_own_macro_goes_by_its_crate_name() {
        assert_eq!(
            resolve(&[("netabase-core", FoundCrate::Itself)]),
            pair("::netabase_core")
        );
        assert_eq!(
            resolve(&[("netabase-store", FoundCrate::Itself)]),
            pair("::netabase_store::core")
        );
        assert_eq!(
            resolve(&[("netabase", FoundCrate::Itself)]),
            pair("::netabase::core")
        );
    }

    #[test]
    fn nothing_found_falls_back_to_the_core() {
        assert_eq!(resolve(&[]), pair("::netabase_core"));
    }
}
