//! Properties of the generated keys and encodings over arbitrary values.

use netabase_core::model::{NetabaseDefinition, NetabaseModel, PrimaryKey, SecondaryKey};
use proptest::prelude::*;

use crate::definitions::chat::{ChatDefinition, Message, MessagePrimaryKey, UserPrimaryKey};
use crate::definitions::inventory::{InventoryDefinition, Product, ShipmentPrimaryKey};

fn any_message() -> impl Strategy<Value = Message> {
    (any::<u64>(), ".{0,12}", ".{0,40}").prop_map(|(id, author, text)| Message { id, author, text })
}

fn any_product() -> impl Strategy<Value = Product> {
    (
        any::<u32>(),
        ".{0,12}",
        any::<u64>(),
        any::<bool>(),
        any::<Option<u8>>(),
    )
        .prop_map(|(sku, category, price_cents, in_stock, kind)| Product {
            sku,
            category,
            description: String::new(),
            price_cents,
            in_stock,
            r#type: kind,
        })
}

proptest! {
    #[test]
    fn u64_key_bytes_sort_like_the_keys(a in any::<u64>(), b in any::<u64>()) {
        let (ka, kb) = (MessagePrimaryKey(a), MessagePrimaryKey(b));
        prop_assert_eq!(ka.cmp(&kb), ka.key_bytes().unwrap().cmp(&kb.key_bytes().unwrap()));
    }

    #[test]
    fn string_key_bytes_sort_like_the_keys(a in any::<String>(), b in any::<String>()) {
        let (ka, kb) = (UserPrimaryKey(a), UserPrimaryKey(b));
        prop_assert_eq!(ka.cmp(&kb), ka.key_bytes().unwrap().cmp(&kb.key_bytes().unwrap()));
    }

    #[test]
    fn composite_key_bytes_sort_like_the_keys(
        a in (".{0,4}", any::<u32>()),
        b in (".{0,4}", any::<u32>()),
    ) {
        let (ka, kb) = (ShipmentPrimaryKey(a), ShipmentPrimaryKey(b));
        prop_assert_eq!(ka.cmp(&kb), ka.key_bytes().unwrap().cmp(&kb.key_bytes().unwrap()));
    }

    #[test]
    fn secondary_value_bytes_sort_like_the_field(a in any_product(), b in any_product()) {
        let (ka, kb) = (a.secondary_keys(), b.secondary_keys());
        prop_assert_eq!(
            a.category.cmp(&b.category),
            ka[0].value_bytes().unwrap().cmp(&kb[0].value_bytes().unwrap())
        );
        prop_assert_eq!(
            a.price_cents.cmp(&b.price_cents),
            ka[1].value_bytes().unwrap().cmp(&kb[1].value_bytes().unwrap())
        );
        prop_assert_eq!(
            a.r#type.cmp(&b.r#type),
            ka[3].value_bytes().unwrap().cmp(&kb[3].value_bytes().unwrap())
        );
    }

    #[test]
    fn values_round_trip_through_the_definition(m in any_message(), p in any_product()) {
        let value = ChatDefinition::from(m.clone());
        let bytes = value.encode_model().unwrap();
        prop_assert_eq!(ChatDefinition::decode_model(Message::ID, &bytes), Ok(value.clone()));
        prop_assert_eq!(value.record_key(), netabase_core::model::record_key(&m.primary_key()));

        let value = InventoryDefinition::from(p);
        let bytes = value.encode_model().unwrap();
        prop_assert_eq!(InventoryDefinition::decode_model(value.model_id(), &bytes), Ok(value));
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(
        model in 0u16..4,
        bytes in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        if let Ok(value) = ChatDefinition::decode_model(model, &bytes) {
            // Whatever decodes is a value of the model asked for, and survives its own
            // round trip.
            prop_assert_eq!(value.model_id(), model);
            let again = value.encode_model().unwrap();
            prop_assert_eq!(ChatDefinition::decode_model(model, &again), Ok(value));
        }
    }
}
