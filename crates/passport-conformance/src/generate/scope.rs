//! Model scope: `allowed_models` (spec section 3 and section 6 step 11).

use super::{body, config, envelope, rejected, seal, signed, step, vector, Keys, MODEL, URI};
use crate::Vector;
use serde_json::json;

/// An empty model list, a model not listed, a model in another case.
pub(super) fn models(k: &Keys, out: &mut Vec<Vector>) {
    let b = body(MODEL);

    for (name, description, models, code) in [
        (
            "allowed-models-empty",
            "allowed_models [] allows no model",
            json!([]),
            "allowed_models_empty",
        ),
        (
            "model-not-allowed",
            "the model is not listed",
            json!(["llama-3.1-8b"]),
            "model_not_allowed",
        ),
        (
            "model-case-differs",
            "matching is case-sensitive",
            json!(["Qwen/Qwen3-32B"]),
            "model_not_allowed",
        ),
    ] {
        let mut v = envelope(k);
        v["scope"]["allowed_models"] = models;
        let raw = seal(v, &k.principal);
        out.push(vector(
            name,
            description,
            config(),
            vec![step(signed(k, &raw, URI, &b), rejected(code))],
        ));
    }
}
