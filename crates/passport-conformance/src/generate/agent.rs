//! Agent signature forgeries (spec section 5).

use super::{
    agent_sig, body, config, envelope, jcs_of, rejected, request, seal, step, vector, Keys, CHAIN,
    MODEL, URI,
};
use crate::Vector;
use passport_core::crypto::encode_base64;

/// Agent signatures over another body, URI, method, chain id or key.
pub(super) fn forgeries(k: &Keys, out: &mut Vec<Vector>) {
    let b = body(MODEL);
    let valid = seal(envelope(k), &k.principal);
    let passport = encode_base64(&valid);

    for (name, description, chain, method, uri, signer, signed_body) in [
        (
            "agent-sig-other-body",
            "signed over another body with the same model",
            CHAIN,
            "POST",
            URI,
            &k.agent,
            body(MODEL)
                .into_iter()
                .chain(b" ".iter().copied())
                .collect::<Vec<u8>>(),
        ),
        (
            "agent-sig-other-uri",
            "signed for /v1/completions, sent to /v1/chat/completions",
            CHAIN,
            "POST",
            "/v1/completions",
            &k.agent,
            b.clone(),
        ),
        (
            "agent-sig-other-method",
            "signed for PUT, sent as POST",
            CHAIN,
            "PUT",
            URI,
            &k.agent,
            b.clone(),
        ),
        (
            "agent-sig-other-chain",
            "signed with gonka-testnet in the payload",
            "gonka-testnet",
            "POST",
            URI,
            &k.agent,
            b.clone(),
        ),
        (
            "agent-sig-other-key",
            "signed by a key other than agent_pubkey",
            CHAIN,
            "POST",
            URI,
            &k.other_agent,
            b.clone(),
        ),
        (
            "agent-sig-query-dropped",
            "signed without the query string that was sent",
            CHAIN,
            "POST",
            URI,
            &k.agent,
            b.clone(),
        ),
    ] {
        let sent_uri = if name == "agent-sig-query-dropped" {
            "/v1/chat/completions?x=1"
        } else {
            URI
        };
        let sig = agent_sig(signer, chain, method, uri, &jcs_of(&valid), &signed_body);
        out.push(vector(
            name,
            description,
            config(),
            vec![step(
                request(
                    "POST",
                    sent_uri,
                    vec![("X-Agent-Passport", passport.clone()), ("X-Agent-Sig", sig)],
                    &b,
                ),
                rejected("agent_sig_invalid"),
            )],
        ));
    }
}
