//! Every denial keyd's `/v1/verify` can answer, one per reason code, so proxies that cannot
//! forward keyd's response body (nginx `auth_request`) can still answer with exactly the
//! body the Envoy filter sends, rendered by keygate-core's `deny::render`.

use keygate_core::deny::{self, DenyResponse};
use keygate_core::error::{KeyReject, TokenReject};
use keygate_core::ollama_sig::SigReject;
use keygate_core::routes::{ApiFlavor, RouteClass};
use keygate_core::verify::DenyReason;

/// One reason per code, in a stable order. Codes shared by several reasons
/// (`route_not_granted`) keep the first, most general message.
pub fn reasons() -> Vec<DenyReason> {
    use DenyReason as D;
    let mut all = vec![D::NoCredential, D::Unparseable];
    all.extend(
        [
            KeyReject::WrongPrefix,
            KeyReject::BadLength,
            KeyReject::BadAlphabet,
            KeyReject::BadChecksum,
        ]
        .map(D::Key),
    );
    all.extend([D::UnknownKey, D::WrongSecret, D::KeyRevoked, D::KeyExpired]);
    all.extend(
        [
            TokenReject::TooLong,
            TokenReject::Malformed,
            TokenReject::BadBase64,
            TokenReject::BadHeader,
            TokenReject::AlgNotAllowed,
            TokenReject::CritNotSupported,
            TokenReject::MissingKid,
            TokenReject::UnknownKid,
            TokenReject::BadSignature,
            TokenReject::BadClaims,
            TokenReject::Expired,
            TokenReject::NotYetValid,
            TokenReject::LifetimeTooLong,
            TokenReject::WrongIssuer,
        ]
        .map(D::Token),
    );
    all.push(D::TokenRevoked);
    all.extend(
        [
            SigReject::Malformed,
            SigReject::BearerPrefixed,
            SigReject::BadPublicKey,
            SigReject::BadSignatureEncoding,
            SigReject::BadSignature,
            SigReject::MissingTs,
            SigReject::ExtraQuery,
            SigReject::BadTs,
            SigReject::Stale,
            SigReject::PrefixMismatch,
        ]
        .map(D::Signed),
    );
    all.extend([
        D::UnregisteredPublicKey,
        D::UnknownRoute,
        D::RouteNotGranted(RouteClass::Read),
        D::RouteNotGranted(RouteClass::Admin),
        D::ModelNotAllowed,
        D::CloudModel,
        D::ModelUnverifiable,
        D::ModelMissing,
        D::BadModelName,
        D::BadBody,
        D::BodyTooLarge,
        D::EncodingNotAllowed,
        D::RateLimited {
            retry_after_secs: 1,
        },
        D::TooManyFailures {
            retry_after_secs: 1,
        },
        D::NoSnapshot,
        D::StaleSnapshot,
    ]);
    let mut seen = Vec::new();
    all.retain(|r| {
        let fresh = !seen.contains(&r.code());
        seen.push(r.code());
        fresh
    });
    all
}

/// What a proxy answers when keyd gave a status but a code this catalog does not know
/// (a newer keyd), or gave nothing at all (unreachable: fail closed with 503).
pub fn fallback(status: u16) -> DenyReason {
    match status {
        400 => DenyReason::BadBody,
        401 => DenyReason::UnknownKey,
        403 => DenyReason::RouteNotGranted(RouteClass::Read),
        413 => DenyReason::BodyTooLarge,
        415 => DenyReason::EncodingNotAllowed,
        429 => DenyReason::RateLimited {
            retry_after_secs: 1,
        },
        _ => DenyReason::StaleSnapshot,
    }
}

/// The statuses `/v1/verify` can deny with.
pub const STATUSES: [u16; 7] = [400, 401, 403, 413, 415, 429, 503];

pub fn render(flavor: ApiFlavor, reason: DenyReason) -> DenyResponse {
    deny::render(flavor, reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_statuses_known() {
        let r = reasons();
        let mut codes: Vec<_> = r.iter().map(|r| r.code()).collect();
        let n = codes.len();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), n);
        for reason in r {
            assert!(STATUSES.contains(&reason.status()), "{reason:?}");
        }
        for s in STATUSES {
            assert_eq!(fallback(s).status(), s);
        }
    }

    #[test]
    fn general_route_message_wins() {
        let r = reasons();
        let granted = r.iter().find(|r| r.code() == "route_not_granted").unwrap();
        assert_eq!(*granted, DenyReason::RouteNotGranted(RouteClass::Read));
    }
}
