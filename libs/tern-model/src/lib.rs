//! Tern's DynamoDB data model: attribute values and items with DynamoDB's validation and error
//! messages, numbers, key schemas with their hash and order-preserving storage keys, and condition
//! and update expressions. Pure: no I/O.

pub mod capacity;
mod error;
mod expr;
mod key;
mod legacy;
mod names;
mod number;
mod query;
mod update;
mod value;

pub use error::{ApiError, ErrorCode, Result, ValidationErrors};
pub use expr::{
    parse_condition, parse_projection, project, validate_substitutions, CmpOp, Condition, Operand,
    PathElem,
};
pub use key::{KeySchema, KeyType, PrimaryKey, ScalarType};
pub use legacy::legacy_condition;
pub use names::validate_table_name;
pub use number::Number;
pub use query::{
    legacy_key_condition, parse_read_expressions, KeyCondition, KeyRange, ReadExpressions,
    SortCondition,
};
pub use update::{parse_update, Action, SetValue, Update};
pub use value::{
    item_size, item_to_json, parse_item, parse_item_json, parse_value, value_to_json,
    AttributeValue, Item, MAX_NESTING,
};
