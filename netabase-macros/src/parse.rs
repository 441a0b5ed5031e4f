//! Reading the models out of a definition module.

use proc_macro2::Span;
use syn::ext::IdentExt;
use syn::punctuated::Punctuated;
use syn::{Attribute, Fields, Ident, Item, ItemStruct, Meta, Path, Token, Type, Visibility};

/// The inert attribute the definition module puts after `#[derive(NetabaseModel)]`, so that
/// the derive knows it runs inside a definition module and has nothing to do.
pub(crate) const MEMBER_MARKER: &str = "__netabase_definition_member";

/// A key field of a model.
pub(crate) struct KeyField {
    /// The field's identifier.
    pub(crate) member: Ident,
    /// The field's type, with the user's spans.
    pub(crate) ty: Type,
    /// The field's name without `r#`.
    pub(crate) name: String,
    /// The field's name in `PascalCase` (secondary-key variant and type names).
    pub(crate) pascal: String,
}

/// A `#[derive(NetabaseModel)]` struct of the module.
pub(crate) struct Model {
    pub(crate) ident: Ident,
    pub(crate) vis: Visibility,
    pub(crate) primary: KeyField,
    pub(crate) secondary: Vec<KeyField>,
    /// `#[netabase(consensus)]`: written only through a consensus cluster's log.
    pub(crate) consensus: bool,
}

/// Finds the models among the module's items, in declaration order, and marks each of
/// them as a definition member. Reports every problem found, not just the first.
pub(crate) fn collect_models(items: &mut [Item]) -> syn::Result<Vec<Model>> {
    let mut models = Vec::new();
    let mut errors = Errors::default();
    for item in items.iter_mut() {
        let (attrs, kind_error) = match item {
            Item::Struct(s) => (&mut s.attrs, None),
            Item::Enum(e) => (
                &mut e.attrs,
                Some(syn::Error::new(
                    e.ident.span(),
                    "`#[derive(NetabaseModel)]` supports structs with named fields only: \
                     enums cannot be models",
                )),
            ),
            Item::Union(u) => (
                &mut u.attrs,
                Some(syn::Error::new(
                    u.ident.span(),
                    "`#[derive(NetabaseModel)]` supports structs with named fields only: \
                     unions cannot be models",
                )),
            ),
            _ => continue,
        };
        let position = match find_model_derive(attrs) {
            Ok(Some(position)) => position,
            Ok(None) => continue,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let marker = Ident::new(MEMBER_MARKER, Span::call_site());
        attrs.insert(position + 1, syn::parse_quote!(#[#marker]));
        if let Some(e) = kind_error {
            errors.push(e);
            continue;
        }
        if let Item::Struct(s) = item {
            match analyze_model(s) {
                Ok(model) => models.push(model),
                Err(e) => errors.push(e),
            }
        }
    }
    errors.finish()?;
    Ok(models)
}

/// The index of the `#[derive(..)]` attribute that lists `NetabaseModel`, if any.
fn find_model_derive(attrs: &[Attribute]) -> syn::Result<Option<usize>> {
    for (index, attr) in attrs.iter().enumerate() {
        if !attr.path().is_ident("derive") {
            continue;
        }
        let paths = attr.parse_args_with(Punctuated::<Path, Token![,]>::parse_terminated)?;
        if paths.iter().any(|path| {
            path.segments
                .last()
                .is_some_and(|segment| segment.ident == "NetabaseModel")
        }) {
            return Ok(Some(index));
        }
    }
    Ok(None)
}

fn analyze_model(s: &ItemStruct) -> syn::Result<Model> {
    let mut errors = Errors::default();
    if let Some(cfg) = s.attrs.iter().find(|attr| attr.path().is_ident("cfg")) {
        errors.push(syn::Error::new_spanned(
            cfg,
            format!(
                "model `{}` cannot be conditionally compiled: model ids are positions in the \
                 definition and must not change with features or targets",
                s.ident
            ),
        ));
    }
    if !s.generics.params.is_empty() || s.generics.where_clause.is_some() {
        errors.push(syn::Error::new_spanned(
            &s.generics,
            format!(
                "model `{}` cannot be generic: models take no type, lifetime or const parameters",
                s.ident
            ),
        ));
    }
    let named = match &s.fields {
        Fields::Named(named) => named,
        Fields::Unnamed(fields) => {
            errors.push(syn::Error::new_spanned(
                fields,
                format!(
                    "model `{}` must have named fields (`struct {} {{ id: u64, .. }}`): \
                     tuple structs are not supported",
                    s.ident, s.ident
                ),
            ));
            return Err(errors.fail());
        }
        Fields::Unit => {
            errors.push(syn::Error::new(
                s.ident.span(),
                format!(
                    "model `{}` must have named fields, one of them `#[primary_key]`: \
                     unit structs are not supported",
                    s.ident
                ),
            ));
            return Err(errors.fail());
        }
    };

    let mut consensus = false;
    for attr in s.attrs.iter().filter(|a| a.path().is_ident("netabase")) {
        let parsed = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("consensus") {
                consensus = true;
                Ok(())
            } else {
                Err(meta.error(
                    "unknown model option: `#[netabase(..)]` accepts `consensus` (a model written only through a consensus cluster's log)",
                ))
            }
        });
        if let Err(e) = parsed {
            errors.push(e);
        }
    }
    let mut primaries: Vec<(KeyField, &Attribute)> = Vec::new();
    let mut secondary = Vec::new();
    for field in &named.named {
        let Some(member) = field.ident.clone() else {
            continue;
        };
        let mut primary_attr: Option<&Attribute> = None;
        let mut secondary_attr: Option<&Attribute> = None;
        let cfg = field.attrs.iter().find(|attr| attr.path().is_ident("cfg"));
        for attr in &field.attrs {
            let slot = if attr.path().is_ident("primary_key") {
                &mut primary_attr
            } else if attr.path().is_ident("secondary_key") {
                &mut secondary_attr
            } else {
                continue;
            };
            let name = if attr.path().is_ident("primary_key") {
                "primary_key"
            } else {
                "secondary_key"
            };
            if !matches!(attr.meta, Meta::Path(_)) {
                errors.push(syn::Error::new_spanned(
                    &attr.meta,
                    format!("`#[{name}]` takes no arguments"),
                ));
            }
            if slot.is_some() {
                errors.push(syn::Error::new_spanned(
                    attr,
                    format!("`#[{name}]` is given twice on field `{member}`"),
                ));
            }
            *slot = Some(attr);
        }
        if let (Some(cfg), true) = (cfg, primary_attr.is_some() || secondary_attr.is_some()) {
            errors.push(syn::Error::new_spanned(
                cfg,
                format!(
                    "key field `{member}` cannot be conditionally compiled: a model's keys \
                     must not change with features or targets"
                ),
            ));
        }
        let name = member.unraw().to_string();
        let key = KeyField {
            pascal: pascal_case(&name),
            name,
            member,
            ty: field.ty.clone(),
        };
        match (primary_attr, secondary_attr) {
            (Some(primary), Some(attr)) => {
                errors.push(syn::Error::new_spanned(
                    attr,
                    format!(
                        "field `{}` cannot be both `#[primary_key]` and `#[secondary_key]`: \
                         the primary key is already unique and looked up directly",
                        key.name
                    ),
                ));
                primaries.push((key, primary));
            }
            (Some(attr), None) => primaries.push((key, attr)),
            (None, Some(_)) => secondary.push(key),
            (None, None) => {}
        }
    }

    let no_primary = || {
        syn::Error::new(
            s.ident.span(),
            format!(
                "model `{}` has no primary key: mark exactly one field with `#[primary_key]`",
                s.ident
            ),
        )
    };
    match primaries.len() {
        0 => errors.push(no_primary()),
        1 => {}
        _ => {
            for (extra, attr) in &primaries[1..] {
                errors.push(syn::Error::new_spanned(
                    attr,
                    format!(
                        "model `{}` has more than one primary key (`{}` and `{}`): \
                         mark exactly one field with `#[primary_key]`, and the others \
                         with `#[secondary_key]` if they should be indexed",
                        s.ident, primaries[0].0.name, extra.name
                    ),
                ));
            }
        }
    }
    for (i, a) in secondary.iter().enumerate() {
        if let Some(b) = secondary[..i].iter().find(|b| b.pascal == a.pascal) {
            errors.push(syn::Error::new(
                a.member.span(),
                format!(
                    "secondary keys `{}` and `{}` would both generate the variant `{}`: \
                     rename one of them",
                    b.name, a.name, a.pascal
                ),
            ));
        }
    }
    if secondary.len() > usize::from(u16::MAX) {
        errors.push(syn::Error::new(
            s.ident.span(),
            "a model can have at most 65535 secondary keys",
        ));
    }
    errors.finish()?;
    let (primary, _) = primaries.into_iter().next().ok_or_else(no_primary)?;
    Ok(Model {
        ident: s.ident.clone(),
        vis: s.vis.clone(),
        primary,
        secondary,
        consensus,
    })
}

/// `created_at` -> `CreatedAt`.
fn pascal_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for part in name.split('_').filter(|part| !part.is_empty()) {
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            out.extend(first.to_uppercase());
            out.push_str(chars.as_str());
        }
    }
    if out.is_empty() {
        out.push_str("Field");
    }
    out
}

/// Accumulates errors so that one expansion reports all of them.
#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(existing) => existing.combine(error),
            None => self.0 = Some(error),
        }
    }

    /// The errors recorded so far; only called after at least one was pushed.
    fn fail(&mut self) -> syn::Error {
        self.0.take().unwrap_or_else(|| {
            syn::Error::new(
                Span::call_site(),
                "invalid `#[derive(NetabaseModel)]` struct",
            )
        })
    }

    fn finish(&mut self) -> syn::Result<()> {
        match self.0.take() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::pascal_case;

    #[test]
    fn pascal_case_joins_snake_case_words() {
        assert_eq!(pascal_case("author"), "Author");
        assert_eq!(pascal_case("created_at"), "CreatedAt");
        assert_eq!(pascal_case("_private__name_"), "PrivateName");
        assert_eq!(pascal_case("userID"), "UserID");
        assert_eq!(pascal_case("__"), "Field");
    }
}
