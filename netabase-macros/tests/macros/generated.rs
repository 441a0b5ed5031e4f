//! The generated types and trait implementations behave as documented.

use netabase_core::Keypair;
use netabase_core::model::{
    Envelope, EnvelopeError, ModelError, ModelInfo, NetabaseDefinition, NetabaseModel, PrimaryKey,
    SecondaryKey, decode_value, encode_key, encode_value, record_key,
};

use crate::definitions::chat::{
    ChatDefinition, ChatKeys, Message, MessageAuthorSecondaryKey, MessageKey, MessagePrimaryKey,
    MessageSecondaryKeys, User, UserEmailSecondaryKey, UserKey, UserPrimaryKey, UserSecondaryKeys,
    loud_text,
};
use crate::definitions::inventory::{
    InventoryDefinition, InventoryKeys, Product, ProductCategorySecondaryKey,
    ProductInStockSecondaryKey, ProductPriceCentsSecondaryKey, ProductSecondaryKeys,
    ProductTypeSecondaryKey, Shipment, ShipmentPrimaryKey, Tag, TagPrimaryKey, TagSecondaryKeys,
};

fn message(id: u64) -> Message {
    Message {
        id,
        author: "ada".to_owned(),
        text: "hello".to_owned(),
    }
}

fn user(name: &str) -> User {
    User {
        name: name.to_owned(),
        email: format!("{name}@example.org"),
    }
}

fn product() -> Product {
    Product {
        sku: 42,
        category: "tools".to_owned(),
        description: "a hammer".to_owned(),
        price_cents: 1999,
        in_stock: true,
        r#type: Some(3),
    }
}

#[test]
fn the_module_keeps_its_own_items() {
    assert_eq!(loud_text(&message(1)), "HELLO");
}

#[test]
fn models_convert_into_the_definition_and_back() {
    let value = ChatDefinition::from(message(1));
    assert_eq!(value, ChatDefinition::Message(message(1)));
    assert_eq!(Message::try_from(value), Ok(message(1)));

    let value: ChatDefinition = user("bob").into();
    assert_eq!(value, ChatDefinition::User(user("bob")));
    assert_eq!(User::try_from(value.clone()), Ok(user("bob")));
}

#[test]
fn converting_the_definition_into_another_model_gives_the_value_back() {
    let value = ChatDefinition::from(message(1));
    assert_eq!(User::try_from(value.clone()), Err(value));
    let value = ChatDefinition::from(user("bob"));
    assert_eq!(Message::try_from(value.clone()), Err(value));
}

#[test]
fn primary_and_secondary_keys_hold_the_field_values() {
    let m = message(9);
    assert_eq!(m.primary_key(), MessagePrimaryKey(9));
    assert_eq!(MessagePrimaryKey::from(9), MessagePrimaryKey(9));
    let secondary = m.secondary_keys();
    assert_eq!(
        secondary,
        vec![MessageSecondaryKeys::Author(MessageAuthorSecondaryKey(
            "ada".to_owned()
        ))]
    );
    assert_eq!(secondary[0].index(), 0);
    assert_eq!(
        secondary[0].value_bytes(),
        encode_key(&"ada".to_owned()),
        "value_bytes is the order-preserving encoding of the field value"
    );

    let u = user("bob");
    assert_eq!(u.primary_key(), UserPrimaryKey("bob".to_owned()));
    assert_eq!(
        u.secondary_keys(),
        vec![UserSecondaryKeys::Email(UserEmailSecondaryKey(
            "bob@example.org".to_owned()
        ))]
    );
    assert_eq!(u.key_bytes(), encode_key("bob"));
}

#[test]
fn several_secondary_keys_are_numbered_in_declaration_order() {
    let p = product();
    let keys = p.secondary_keys();
    assert_eq!(
        keys,
        vec![
            ProductSecondaryKeys::Category(ProductCategorySecondaryKey("tools".to_owned())),
            ProductSecondaryKeys::PriceCents(ProductPriceCentsSecondaryKey(1999)),
            ProductSecondaryKeys::InStock(ProductInStockSecondaryKey(true)),
            ProductSecondaryKeys::Type(ProductTypeSecondaryKey(Some(3))),
        ]
    );
    let indices: Vec<u16> = keys.iter().map(SecondaryKey::index).collect();
    assert_eq!(indices, [0, 1, 2, 3]);
    let values: Vec<Vec<u8>> = keys.iter().map(|k| k.value_bytes().unwrap()).collect();
    assert_eq!(
        values,
        [
            encode_key("tools").unwrap(),
            encode_key(&1999u64).unwrap(),
            encode_key(&true).unwrap(),
            encode_key(&Some(3u8)).unwrap(),
        ]
    );
    // The secondary-key names in the definition line up with the indices.
    let info = &InventoryDefinition::MODELS[usize::from(Product::ID)];
    for key in &keys {
        let name = info.secondary_keys[usize::from(key.index())];
        let expected = match key {
            ProductSecondaryKeys::Category(_) => "category",
            ProductSecondaryKeys::PriceCents(_) => "price_cents",
            ProductSecondaryKeys::InStock(_) => "in_stock",
            ProductSecondaryKeys::Type(_) => "type",
        };
        assert_eq!(name, expected);
    }
    assert_eq!(
        ProductSecondaryKeys::from(ProductInStockSecondaryKey::from(false)),
        ProductSecondaryKeys::InStock(ProductInStockSecondaryKey(false))
    );
}

#[test]
fn a_model_without_secondary_keys_has_none() {
    let tag = Tag {
        label: "rust".to_owned(),
        uses: 3,
    };
    assert_eq!(tag.secondary_keys(), Vec::<TagSecondaryKeys>::new());
    assert_eq!(tag.primary_key(), TagPrimaryKey("rust".to_owned()));
    assert!(
        InventoryDefinition::MODELS[usize::from(Tag::ID)]
            .secondary_keys
            .is_empty()
    );
}

#[test]
fn a_composite_primary_key_is_encoded_field_by_field() {
    let shipment = Shipment {
        id: ("north".to_owned(), 12),
        products: vec![42],
    };
    assert_eq!(
        shipment.primary_key(),
        ShipmentPrimaryKey(("north".to_owned(), 12))
    );
    let mut expected = encode_key("north").unwrap();
    expected.extend(encode_key(&12u32).unwrap());
    assert_eq!(shipment.key_bytes(), Ok(expected));
}

#[test]
fn the_definition_lists_its_models() {
    assert_eq!(ChatDefinition::NAME, "ChatDefinition");
    assert_eq!(ChatDefinition::SCHEMA_VERSION, 1);
    assert_eq!(
        ChatDefinition::MODELS,
        &[
            ModelInfo {
                id: 0,
                name: "Message",
                secondary_keys: &["author"],
            },
            ModelInfo {
                id: 1,
                name: "User",
                secondary_keys: &["email"],
            },
        ]
    );
    assert_eq!((Message::ID, Message::NAME), (0, "Message"));
    assert_eq!((User::ID, User::NAME), (1, "User"));

    assert_eq!(InventoryDefinition::NAME, "InventoryDefinition");
    assert_eq!(InventoryDefinition::SCHEMA_VERSION, 2);
    assert_eq!(
        InventoryDefinition::MODELS,
        &[
            ModelInfo {
                id: 0,
                name: "Product",
                secondary_keys: &["category", "price_cents", "in_stock", "type"],
            },
            ModelInfo {
                id: 1,
                name: "Tag",
                secondary_keys: &[],
            },
            ModelInfo {
                id: 2,
                name: "Shipment",
                secondary_keys: &[],
            },
        ]
    );
    assert_eq!(crate::definitions::private_note_model_id(5), 0);
    assert_eq!(crate::definitions::hidden_draft_model_id(5), 0);
}

#[test]
fn definition_values_know_their_model_and_key() {
    let value = ChatDefinition::from(user("bob"));
    assert_eq!(value.model_id(), User::ID);
    assert_eq!(value.primary_key_bytes(), encode_key("bob"));
    let value = ChatDefinition::from(message(3));
    assert_eq!(value.model_id(), Message::ID);
    assert_eq!(value.primary_key_bytes(), encode_key(&3u64));
    assert_eq!(
        value.secondary_key_bytes(),
        Ok(vec![(0, encode_key("ada").unwrap())])
    );
    let value = InventoryDefinition::from(product());
    assert_eq!(
        value.secondary_key_bytes(),
        Ok(vec![
            (0, encode_key("tools").unwrap()),
            (1, encode_key(&1999u64).unwrap()),
            (2, encode_key(&true).unwrap()),
            (3, encode_key(&Some(3u8)).unwrap()),
        ])
    );
    let tag = InventoryDefinition::from(Tag {
        label: "t".to_owned(),
        uses: 0,
    });
    assert_eq!(tag.secondary_key_bytes(), Ok(vec![]));
}

#[test]
fn models_round_trip_through_the_definition_encoding() {
    let values = [
        ChatDefinition::from(message(1)),
        ChatDefinition::from(user("bob")),
    ];
    for value in values {
        let bytes = value.encode_model().unwrap();
        assert_eq!(
            ChatDefinition::decode_model(value.model_id(), &bytes),
            Ok(value.clone())
        );
    }
    // The payload is the model's own bincode encoding.
    let bytes = ChatDefinition::from(message(1)).encode_model().unwrap();
    assert_eq!(bytes, encode_value(&message(1)).unwrap());
    assert_eq!(decode_value::<Message>("Message", &bytes), Ok(message(1)));
}

#[test]
fn decoding_bad_bytes_or_an_unknown_model_is_a_typed_error() {
    assert!(matches!(
        ChatDefinition::decode_model(Message::ID, &[0xFF, 0xFF]),
        Err(ModelError::Decode {
            model: "Message",
            ..
        })
    ));
    assert!(matches!(
        ChatDefinition::decode_model(User::ID, &[]),
        Err(ModelError::Decode { model: "User", .. })
    ));
    let mut bytes = ChatDefinition::from(message(1)).encode_model().unwrap();
    bytes.push(0);
    assert!(matches!(
        ChatDefinition::decode_model(Message::ID, &bytes),
        Err(ModelError::Decode {
            model: "Message",
            ..
        })
    ));
    assert_eq!(
        ChatDefinition::decode_model(2, &bytes),
        Err(ModelError::UnknownModel(2))
    );
    assert_eq!(
        InventoryDefinition::decode_model(u16::MAX, &[]),
        Err(ModelError::UnknownModel(u16::MAX))
    );
}

#[test]
fn the_definition_and_the_key_derive_the_same_record_key() {
    for id in [0, 1, u64::MAX] {
        let value = ChatDefinition::from(message(id));
        assert_eq!(value.record_key(), record_key(&MessagePrimaryKey(id)));
    }
    let value = ChatDefinition::from(user("bob"));
    let key = record_key(&UserPrimaryKey("bob".to_owned())).unwrap();
    assert_eq!(value.record_key(), Ok(key.clone()));
    assert!(key.as_bytes().starts_with(b"/nb/ChatDefinition/User/"));

    // The same key value under another model or definition is another record.
    let tag = record_key(&TagPrimaryKey("bob".to_owned())).unwrap();
    assert_ne!(key, tag);
}

#[test]
fn envelopes_seal_and_open_generated_definitions() {
    let keypair = Keypair::from_seed(3);
    let origin = keypair.peer_id();
    let value = ChatDefinition::from(message(7));
    let (key, bytes) = Envelope::seal(&value, 1234, &keypair).unwrap();
    assert_eq!(key, record_key(&MessagePrimaryKey(7)).unwrap());
    let (opened, envelope) = Envelope::open::<ChatDefinition>(&key, &bytes).unwrap();
    assert_eq!(opened, value);
    assert_eq!(envelope.model, Message::ID);
    assert_eq!(envelope.schema_version, 1);
    assert_eq!(envelope.timestamp, 1234);
    assert_eq!(envelope.origin, origin);

    // Under another key the signature does not hold, and the value does not belong.
    let other = record_key(&MessagePrimaryKey(8)).unwrap();
    assert!(matches!(
        Envelope::open::<ChatDefinition>(&other, &bytes),
        Err(EnvelopeError::Signature(_))
    ));
    assert_eq!(
        Envelope::open_verified::<ChatDefinition>(&other, &bytes),
        Err(EnvelopeError::KeyMismatch)
    );

    // The schema version of the definition travels in the envelope.
    let value = InventoryDefinition::from(product());
    let (key, bytes) = Envelope::seal(&value, 1, &keypair).unwrap();
    let (opened, envelope) = Envelope::open::<InventoryDefinition>(&key, &bytes).unwrap();
    assert_eq!((opened, envelope.schema_version), (value, 2));
}

#[test]
fn key_enums_wrap_each_models_keys() {
    let pk = MessagePrimaryKey(5);
    assert_eq!(
        MessageKey::from(pk.clone()),
        MessageKey::Primary(pk.clone())
    );
    assert_eq!(
        ChatKeys::from(pk.clone()),
        ChatKeys::Message(MessageKey::Primary(pk.clone()))
    );
    let email = UserSecondaryKeys::from(UserEmailSecondaryKey::from("a@b".to_owned()));
    assert_eq!(
        ChatKeys::from(email.clone()),
        ChatKeys::User(UserKey::Secondary(email.clone()))
    );
    assert_eq!(ChatKeys::from(UserKey::from(email)).model_id(), User::ID);
    assert_eq!(ChatKeys::from(pk).model_id(), Message::ID);
    assert_eq!(
        InventoryKeys::from(TagPrimaryKey("x".to_owned())).model_id(),
        Tag::ID
    );

    // The keys enum is the definition's `Keys` and serialises.
    let keys: <ChatDefinition as NetabaseDefinition>::Keys =
        ChatKeys::from(UserPrimaryKey("bob".to_owned()));
    let bytes = encode_value(&keys).unwrap();
    assert_eq!(decode_value::<ChatKeys>("ChatKeys", &bytes), Ok(keys));
}

/// Accepts only primary keys of `Message`: a `UserPrimaryKey` does not compile here
/// (`tests/ui/fail/wrong_model_key.rs`).
fn message_key_bytes<K: PrimaryKey<Model = Message>>(key: &K) -> Vec<u8> {
    key.key_bytes().unwrap()
}

#[test]
fn keys_are_tied_to_their_model() {
    assert_eq!(
        message_key_bytes(&MessagePrimaryKey(1)),
        encode_key(&1u64).unwrap()
    );
    fn model_name<K: PrimaryKey>(_: &K) -> &'static str {
        <K::Model as NetabaseModel>::NAME
    }
    assert_eq!(model_name(&MessagePrimaryKey(1)), "Message");
    assert_eq!(model_name(&UserPrimaryKey(String::new())), "User");
    assert_eq!(
        model_name(&ShipmentPrimaryKey((String::new(), 0))),
        "Shipment"
    );
}

#[test]
fn consensus_models_are_marked_and_others_are_not() {
    use crate::definitions::chat::Message;
    use crate::definitions::ledger::{Account, Note};
    let marked = [Account::CONSENSUS, Note::CONSENSUS, Message::CONSENSUS];
    assert_eq!(marked, [true, false, false]);
}
