//! Conversions into `InferParameter`, so request and tensor parameters can
//! be written as plain values.

use crate::inference::{InferParameter, ParameterChoice};

macro_rules! parameter_from {
    ($($t:ty => $variant:ident),* $(,)?) => {$(
        impl From<$t> for InferParameter {
            fn from(value: $t) -> Self {
                InferParameter {
                    parameter_choice: Some(ParameterChoice::$variant(value.into())),
                }
            }
        }
    )*};
}

parameter_from! {
    bool => BoolParam,
    i64 => Int64Param,
    u64 => Uint64Param,
    f64 => DoubleParam,
    String => StringParam,
    &str => StringParam,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_convert_to_their_oneof_variant() {
        let choice = |p: InferParameter| p.parameter_choice;
        assert_eq!(choice(true.into()), Some(ParameterChoice::BoolParam(true)));
        assert_eq!(
            choice((-3i64).into()),
            Some(ParameterChoice::Int64Param(-3))
        );
        assert_eq!(choice(7u64.into()), Some(ParameterChoice::Uint64Param(7)));
        assert_eq!(
            choice(0.5f64.into()),
            Some(ParameterChoice::DoubleParam(0.5))
        );
        assert_eq!(
            choice("a".into()),
            Some(ParameterChoice::StringParam("a".into()))
        );
    }
}
