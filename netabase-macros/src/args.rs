//! The arguments of `#[netabase_definition_module(Definition, Keys, schema_version = N)]`.

use syn::parse::{Parse, ParseStream};
use syn::{Ident, LitInt, Token};

/// The parsed attribute arguments.
pub(crate) struct DefinitionArgs {
    /// The name of the generated definition enum.
    pub(crate) definition: Ident,
    /// The name of the generated keys enum.
    pub(crate) keys: Ident,
    /// The definition's schema version (1 unless given).
    pub(crate) schema_version: u32,
}

const USAGE: &str = "expected `#[netabase_definition_module(DefinitionName, KeysName)]` \
                     or `#[netabase_definition_module(DefinitionName, KeysName, schema_version = N)]`";

impl Parse for DefinitionArgs {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        if input.is_empty() {
            return Err(input.error(USAGE));
        }
        let definition: Ident = input
            .parse()
            .map_err(|e| syn::Error::new(e.span(), USAGE))?;
        if !input.peek(Token![,]) {
            return Err(input.error(USAGE));
        }
        input.parse::<Token![,]>()?;
        let keys: Ident = input
            .parse()
            .map_err(|e| syn::Error::new(e.span(), USAGE))?;
        if definition == keys {
            return Err(syn::Error::new(
                keys.span(),
                "the definition and the keys enum need different names",
            ));
        }
        let mut schema_version = None;
        while !input.is_empty() {
            input.parse::<Token![,]>()?;
            if input.is_empty() {
                break;
            }
            let name: Ident = input.parse()?;
            if name != "schema_version" {
                return Err(syn::Error::new(
                    name.span(),
                    format!("unknown argument `{name}`: the only option is `schema_version = N`"),
                ));
            }
            if schema_version.is_some() {
                return Err(syn::Error::new(
                    name.span(),
                    "`schema_version` is given more than once",
                ));
            }
            input.parse::<Token![=]>()?;
            let value: LitInt = input.parse()?;
            let version = value.base10_parse::<u32>().map_err(|_| {
                syn::Error::new(
                    value.span(),
                    "`schema_version` must be an integer between 0 and 4294967295 (a u32)",
                )
            })?;
            schema_version = Some(version);
        }
        Ok(DefinitionArgs {
            definition,
            keys,
            schema_version: schema_version.unwrap_or(1),
        })
    }
}
