//! Code generation of `#[netabase_definition_module]`.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Ident, Item, ItemMod, LitStr, Path, Visibility};

use crate::args::DefinitionArgs;
use crate::parse::{KeyField, Model, collect_models};
use crate::paths::CorePath;

/// Expands a definition module: the module's own items, unchanged except for the member
/// marker on each model, followed by the generated items.
pub(crate) fn definition_module(args: DefinitionArgs, mut module: ItemMod) -> TokenStream {
    let Some((_, items)) = &mut module.content else {
        return syn::Error::new(
            module.ident.span(),
            "`#[netabase_definition_module]` needs the module's items inline: \
             `mod name { .. }`, not `mod name;`",
        )
        .to_compile_error();
    };
    let models = match collect_models(items) {
        Ok(models) => models,
        Err(e) => {
            let error = e.to_compile_error();
            return quote!(#module #error);
        }
    };
    if let Err(e) = check_definition(&args, &models, &module) {
        let error = e.to_compile_error();
        return quote!(#module #error);
    }
    let core = CorePath::find();
    let generator = Generator {
        core: &core,
        args: &args,
        // The definition and keys enums appear in the models' trait impls, so they must
        // be at least as visible as the most visible model: a `pub` model makes them `pub`
        // even in a private module (anything less is a private type in a public interface).
        definition_vis: if models
            .iter()
            .any(|m| matches!(m.vis, syn::Visibility::Public(_)))
        {
            quote!(pub)
        } else {
            inner_visibility(&module.vis)
        },
    };
    let mut generated = TokenStream::new();
    for (id, model) in models.iter().enumerate() {
        // `check_definition` made sure that every id fits a `u16`.
        generated.extend(generator.model(id as u16, model));
    }
    generated.extend(generator.definition(&models));
    generated.extend(generator.keys(&models));
    if let Some((_, items)) = &mut module.content {
        items.push(Item::Verbatim(generated));
    }
    quote!(#module)
}

fn check_definition(args: &DefinitionArgs, models: &[Model], module: &ItemMod) -> syn::Result<()> {
    if models.is_empty() {
        return Err(syn::Error::new(
            module.ident.span(),
            format!(
                "definition module `{}` has no models: add a struct with \
                 `#[derive(NetabaseModel)]` and a `#[primary_key]` field",
                module.ident
            ),
        ));
    }
    if models.len() > usize::from(u16::MAX) + 1 {
        return Err(syn::Error::new(
            module.ident.span(),
            "a definition can hold at most 65536 models",
        ));
    }
    for model in models {
        if model.ident == args.definition || model.ident == args.keys {
            return Err(syn::Error::new(
                model.ident.span(),
                format!(
                    "model `{}` has the name given to the generated definition or keys enum",
                    model.ident
                ),
            ));
        }
    }
    Ok(())
}

/// The visibility, seen from inside the module, that makes an item as visible as the
/// module itself: `pub` stays `pub`, a private module's items become `pub(super)`.
fn inner_visibility(module_vis: &Visibility) -> TokenStream {
    match module_vis {
        Visibility::Public(_) => quote!(pub),
        Visibility::Inherited => quote!(pub(super)),
        Visibility::Restricted(restricted) => {
            let path = &restricted.path;
            let first = path.segments.first().map(|s| s.ident.to_string());
            match first.as_deref() {
                Some("crate") if path.segments.len() == 1 => quote!(pub(crate)),
                Some("crate") => quote!(pub(in #path)),
                Some("self") => quote!(pub(super)),
                Some("super") => quote!(pub(in super::#path)),
                _ => quote!(pub(super)),
            }
        }
    }
}

struct Generator<'a> {
    core: &'a CorePath,
    args: &'a DefinitionArgs,
    definition_vis: TokenStream,
}

/// The names of one model's generated types.
struct ModelNames {
    primary: Ident,
    secondary_enum: Ident,
    key: Ident,
}

impl ModelNames {
    fn of(model: &Model) -> ModelNames {
        let ident = &model.ident;
        ModelNames {
            primary: format_ident!("{}PrimaryKey", ident),
            secondary_enum: format_ident!("{}SecondaryKeys", ident),
            key: format_ident!("{}Key", ident),
        }
    }

    fn secondary_newtype(model: &Model, field: &KeyField) -> Ident {
        format_ident!("{}{}SecondaryKey", model.ident, field.pascal)
    }
}

/// A span of the macro's expansion shown at a key field's type: errors about the type
/// (a key type missing a trait) point at the field, while lints still see generated code.
fn at_field(field: &KeyField) -> Span {
    Span::call_site().located_at(field.ty.span())
}

fn doc(text: String) -> TokenStream {
    let text = LitStr::new(&text, Span::call_site());
    quote!(#[doc = #text])
}

impl Generator<'_> {
    fn serde(&self) -> TokenStream {
        let core = &self.core.tokens;
        quote!(#core::model::__private::serde)
    }

    /// The derives and serde attribute of every generated key type.
    fn key_derives(&self, ordered: bool, span: Span) -> TokenStream {
        let serde = self.serde();
        let serde_crate = LitStr::new(
            &format!("{}::model::__private::serde", self.core.text),
            Span::call_site(),
        );
        let order = if ordered {
            quote!(::core::cmp::PartialOrd, ::core::cmp::Ord,)
        } else {
            quote!()
        };
        quote_spanned! {span=>
            #[derive(
                ::core::clone::Clone,
                ::core::fmt::Debug,
                ::core::cmp::PartialEq,
                ::core::cmp::Eq,
                #order
                ::core::hash::Hash,
                #serde::Serialize,
                #serde::Deserialize,
            )]
            #[serde(crate = #serde_crate)]
        }
    }

    /// Everything generated for one model.
    fn model(&self, id: u16, model: &Model) -> TokenStream {
        let core = &self.core.tokens;
        let serde = self.serde();
        let model_ident = &model.ident;
        let vis = &model.vis;
        let names = ModelNames::of(model);
        let primary = &names.primary;
        let secondary_enum = &names.secondary_enum;
        let key = &names.key;
        let definition = &self.args.definition;
        let model_name = model_ident.to_string();
        let model_name_lit = LitStr::new(&model_name, model_ident.span());
        let consensus = model.consensus;
        let enum_derives = self.key_derives(false, Span::call_site());

        // Bound check of every key field, spanned on the field's type so that a key type
        // that cannot be a key is reported at the field.
        let key_fields = std::iter::once(&model.primary).chain(&model.secondary);
        let checks = key_fields.map(|field| {
            let ty = &field.ty;
            quote_spanned! {at_field(field)=>
                let _ = key_field_requirements::<#ty>;
            }
        });
        let bound_check = quote! {
            const _: () = {
                fn key_field_requirements<T>()
                where
                    T: #serde::Serialize
                        + #serde::de::DeserializeOwned
                        + ::core::cmp::Ord
                        + ::core::hash::Hash
                        + ::core::clone::Clone
                        + ::core::fmt::Debug
                        + ::core::marker::Send
                        + ::core::marker::Sync
                        + 'static,
                {
                }
                #(#checks)*
            };
        };

        // The primary key newtype.
        let primary_ty = &model.primary.ty;
        let primary_member = &model.primary.member;
        let derives = self.key_derives(true, at_field(&model.primary));
        let primary_doc = doc(format!(
            "The primary key of [`{model_name}`]: the value of its `{}` field.",
            model.primary.name
        ));
        let primary_items = quote! {
            #primary_doc
            #derives
            #vis struct #primary(pub #primary_ty);

            impl ::core::convert::From<#primary_ty> for #primary {
                fn from(value: #primary_ty) -> Self {
                    #primary(value)
                }
            }

            impl #core::model::PrimaryKey for #primary {
                type Model = #model_ident;
            }
        };

        // One newtype per secondary key, and the enum of them.
        let mut secondary_items = TokenStream::new();
        let mut variants = Vec::new();
        let mut index_arms = Vec::new();
        let mut value_arms = Vec::new();
        let mut collect = Vec::new();
        for (index, field) in model.secondary.iter().enumerate() {
            let newtype = ModelNames::secondary_newtype(model, field);
            let variant = Ident::new(&field.pascal, Span::call_site());
            let ty = &field.ty;
            let member = &field.member;
            // At most u16::MAX secondary keys, checked while parsing.
            let index = index as u16;
            let derives = self.key_derives(true, at_field(field));
            let newtype_doc = doc(format!(
                "The secondary key `{}` of [`{model_name}`].",
                field.name
            ));
            let variant_doc = doc(format!(
                "The `{}` field of [`{model_name}`] (secondary key {index}).",
                field.name
            ));
            secondary_items.extend(quote! {
                #newtype_doc
                #derives
                #vis struct #newtype(pub #ty);

                impl ::core::convert::From<#ty> for #newtype {
                    fn from(value: #ty) -> Self {
                        #newtype(value)
                    }
                }

                impl ::core::convert::From<#newtype> for #secondary_enum {
                    fn from(key: #newtype) -> Self {
                        #secondary_enum::#variant(key)
                    }
                }
            });
            variants.push(quote!(#variant_doc #variant(#newtype)));
            index_arms.push(quote!(#secondary_enum::#variant(_) => #index));
            let encode = quote_spanned!(at_field(field)=> #core::model::encode_key(&key.0));
            value_arms.push(quote!(#secondary_enum::#variant(key) => #encode));
            collect.push(quote! {
                keys.push(#secondary_enum::#variant(#newtype(
                    ::core::clone::Clone::clone(&self.#member),
                )));
            });
        }
        let secondary_enum_doc = if model.secondary.is_empty() {
            doc(format!(
                "The secondary keys of [`{model_name}`]: it has none, so this enum has no \
                 values."
            ))
        } else {
            doc(format!(
                "The secondary keys of [`{model_name}`], one variant per \
                 `#[secondary_key]` field."
            ))
        };
        let (index_body, value_body) = if model.secondary.is_empty() {
            (quote!(match *self {}), quote!(match *self {}))
        } else {
            (
                quote!(match self { #(#index_arms,)* }),
                quote!(match self { #(#value_arms,)* }),
            )
        };
        let secondary_count = model.secondary.len();
        let secondary_keys_body = if model.secondary.is_empty() {
            quote!(#core::model::__private::Vec::new())
        } else {
            quote! {
                let mut keys = #core::model::__private::Vec::with_capacity(#secondary_count);
                #(#collect)*
                keys
            }
        };
        secondary_items.extend(quote! {
            #secondary_enum_doc
            #enum_derives
            #vis enum #secondary_enum {
                #(#variants,)*
            }

            impl #core::model::SecondaryKey for #secondary_enum {
                type Model = #model_ident;

                fn index(&self) -> ::core::primitive::u16 {
                    #index_body
                }

                fn value_bytes(
                    &self,
                ) -> ::core::result::Result<
                    #core::model::__private::Vec<::core::primitive::u8>,
                    #core::model::KeyEncodeError,
                > {
                    #value_body
                }
            }
        });

        // The model's key enum.
        let key_doc = doc(format!(
            "A key of [`{model_name}`]: its primary key or one of its secondary keys."
        ));
        let key_items = quote! {
            #key_doc
            #enum_derives
            #vis enum #key {
                /// The primary key.
                Primary(#primary),
                /// A secondary key.
                Secondary(#secondary_enum),
            }

            impl ::core::convert::From<#primary> for #key {
                fn from(key: #primary) -> Self {
                    #key::Primary(key)
                }
            }

            impl ::core::convert::From<#secondary_enum> for #key {
                fn from(key: #secondary_enum) -> Self {
                    #key::Secondary(key)
                }
            }
        };

        // The model trait, with its header spanned on the model so that a model lacking a
        // required trait (`Serialize`, `Clone`, ..) is reported there.
        let impl_header = quote_spanned! {model_ident.span()=>
            impl #core::model::NetabaseModel for #model_ident
        };
        let model_impl = quote! {
            #impl_header {
                type Definition = #definition;
                type PrimaryKey = #primary;
                type SecondaryKey = #secondary_enum;

                const ID: #core::model::ModelId = #id;
                const NAME: &'static ::core::primitive::str = #model_name_lit;
                const CONSENSUS: ::core::primitive::bool = #consensus;

                fn primary_key(&self) -> #primary {
                    #primary(::core::clone::Clone::clone(&self.#primary_member))
                }

                fn secondary_keys(&self) -> #core::model::__private::Vec<#secondary_enum> {
                    #secondary_keys_body
                }
            }
        };

        quote! {
            #bound_check
            #primary_items
            #secondary_items
            #key_items
            #model_impl
        }
    }

    /// The definition enum and its trait.
    fn definition(&self, models: &[Model]) -> TokenStream {
        let core = &self.core.tokens;
        let serde = self.serde();
        let serde_crate = LitStr::new(
            &format!("{}::model::__private::serde", self.core.text),
            Span::call_site(),
        );
        let vis = &self.definition_vis;
        let definition = &self.args.definition;
        let keys = &self.args.keys;
        let definition_name = LitStr::new(&definition.to_string(), definition.span());
        let schema_version = self.args.schema_version;
        let model_idents: Vec<&Ident> = models.iter().map(|m| &m.ident).collect();
        let ids = (0..models.len()).map(|id| id as u16).collect::<Vec<_>>();
        let names = models
            .iter()
            .map(|m| LitStr::new(&m.ident.to_string(), m.ident.span()))
            .collect::<Vec<_>>();
        let secondary_names = models.iter().map(|m| {
            let names = m.secondary.iter().map(|f| &f.name);
            quote!(&[#(#names),*])
        });
        let variant_docs = models
            .iter()
            .map(|m| doc(format!("A [`{}`] value.", m.ident)));
        let list = models
            .iter()
            .map(|m| format!("[`{}`]", m.ident))
            .collect::<Vec<_>>()
            .join(", ");
        let definition_doc = doc(format!(
            "The definition `{definition}`: one variant per model ({list}), schema version \
             {schema_version}."
        ));

        quote! {
            #definition_doc
            #[derive(
                ::core::clone::Clone,
                ::core::fmt::Debug,
                ::core::cmp::PartialEq,
                #serde::Serialize,
                #serde::Deserialize,
            )]
            #[serde(crate = #serde_crate)]
            #vis enum #definition {
                #(#variant_docs #model_idents(#model_idents),)*
            }

            #(
                impl ::core::convert::From<#model_idents> for #definition {
                    fn from(value: #model_idents) -> Self {
                        #definition::#model_idents(value)
                    }
                }

                /// Gives the definition value back when it holds another model.
                impl ::core::convert::TryFrom<#definition> for #model_idents {
                    type Error = #definition;

                    #[allow(unreachable_patterns)]
                    fn try_from(
                        value: #definition,
                    ) -> ::core::result::Result<Self, #definition> {
                        match value {
                            #definition::#model_idents(value) => ::core::result::Result::Ok(value),
                            other => ::core::result::Result::Err(other),
                        }
                    }
                }
            )*

            impl #core::model::NetabaseDefinition for #definition {
                type Keys = #keys;

                const NAME: &'static ::core::primitive::str = #definition_name;
                const SCHEMA_VERSION: ::core::primitive::u32 = #schema_version;
                const MODELS: &'static [#core::model::ModelInfo] = &[
                    #(
                        #core::model::ModelInfo {
                            id: #ids,
                            name: #names,
                            secondary_keys: #secondary_names,
                        },
                    )*
                ];

                fn model_id(&self) -> #core::model::ModelId {
                    match self {
                        #(#definition::#model_idents(_) => #ids,)*
                    }
                }

                fn primary_key_bytes(
                    &self,
                ) -> ::core::result::Result<
                    #core::model::__private::Vec<::core::primitive::u8>,
                    #core::model::KeyEncodeError,
                > {
                    match self {
                        #(
                            #definition::#model_idents(value) => {
                                #core::model::NetabaseModel::key_bytes(value)
                            }
                        )*
                    }
                }

                fn secondary_key_bytes(
                    &self,
                ) -> ::core::result::Result<
                    #core::model::__private::Vec<(
                        ::core::primitive::u16,
                        #core::model::__private::Vec<::core::primitive::u8>,
                    )>,
                    #core::model::KeyEncodeError,
                > {
                    match self {
                        #(
                            #definition::#model_idents(value) => {
                                #core::model::encode_secondary_keys(value)
                            }
                        )*
                    }
                }

                fn encode_model(
                    &self,
                ) -> ::core::result::Result<
                    #core::model::__private::Vec<::core::primitive::u8>,
                    #core::model::ModelError,
                > {
                    match self {
                        #(#definition::#model_idents(value) => #core::model::encode_value(value),)*
                    }
                }

                fn decode_model(
                    model: #core::model::ModelId,
                    bytes: &[::core::primitive::u8],
                ) -> ::core::result::Result<Self, #core::model::ModelError> {
                    match model {
                        #(
                            #ids => #core::model::decode_value::<#model_idents>(#names, bytes)
                                .map(#definition::#model_idents),
                        )*
                        other => ::core::result::Result::Err(
                            #core::model::ModelError::UnknownModel(other),
                        ),
                    }
                }
            }
        }
    }

    /// The enum of all keys of the definition.
    fn keys(&self, models: &[Model]) -> TokenStream {
        let core = &self.core.tokens;
        let vis = &self.definition_vis;
        let definition = &self.args.definition;
        let keys = &self.args.keys;
        let derives = self.key_derives(false, Span::call_site());
        let model_idents: Vec<&Ident> = models.iter().map(|m| &m.ident).collect();
        let ids = (0..models.len()).map(|id| id as u16).collect::<Vec<_>>();
        let names: Vec<ModelNames> = models.iter().map(ModelNames::of).collect();
        let key_types: Vec<&Ident> = names.iter().map(|n| &n.key).collect();
        let primaries: Vec<&Ident> = names.iter().map(|n| &n.primary).collect();
        let secondaries: Vec<&Ident> = names.iter().map(|n| &n.secondary_enum).collect();
        let variant_docs = models
            .iter()
            .map(|m| doc(format!("A key of [`{}`].", m.ident)));
        let keys_doc = doc(format!(
            "Every key of every model of [`{definition}`]: one variant per model."
        ));
        let model_path: Path = syn::parse_quote!(#core::model::ModelId);
        quote! {
            #keys_doc
            #derives
            #vis enum #keys {
                #(#variant_docs #model_idents(#key_types),)*
            }

            impl #keys {
                /// The id of the model this key belongs to.
                #vis fn model_id(&self) -> #model_path {
                    match self {
                        #(#keys::#model_idents(_) => #ids,)*
                    }
                }
            }

            #(
                impl ::core::convert::From<#key_types> for #keys {
                    fn from(key: #key_types) -> Self {
                        #keys::#model_idents(key)
                    }
                }

                impl ::core::convert::From<#primaries> for #keys {
                    fn from(key: #primaries) -> Self {
                        #keys::#model_idents(#key_types::Primary(key))
                    }
                }

                impl ::core::convert::From<#secondaries> for #keys {
                    fn from(key: #secondaries) -> Self {
                        #keys::#model_idents(#key_types::Secondary(key))
                    }
                }
            )*
        }
    }
}
