//! The route decision, made on the method and the normal path of an admitted request.

use super::path::route_key;
use super::settings::{Route, Unguarded};
use http::Method;

/// What happens to an admitted request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Through the passport layer.
    Guard,
    /// Forwarded without a passport check: the route is in `routes.public`.
    Public,
    /// Forwarded without a passport check: `routes.unguarded = "forward"`.
    Forward,
    /// 404 `route_not_allowed`: `routes.unguarded = "refuse"`.
    Refuse,
}

/// The configured routes and what an unlisted route gets.
#[derive(Clone, Debug)]
pub struct RouteTable {
    guarded: Vec<Route>,
    public: Vec<Route>,
    unguarded: Unguarded,
    passport_required: bool,
}

impl RouteTable {
    /// `passport_required` is `agent_envelope.mode = "required"` with the layer enabled.
    pub fn new(
        guarded: Vec<Route>,
        public: Vec<Route>,
        unguarded: Unguarded,
        passport_required: bool,
    ) -> RouteTable {
        RouteTable {
            guarded,
            public,
            unguarded,
            passport_required,
        }
    }

    /// The decision for `method` on `normal` (a path in normal form). A trailing slash
    /// names the same route. With a passport required, every route that is neither
    /// public nor refused goes through the layer: required means no request reaches
    /// the upstream without an accepted passport unless the operator listed its route.
    pub fn decide(&self, method: &Method, normal: &str) -> Decision {
        let key = route_key(normal);
        let listed = |routes: &[Route]| routes.iter().any(|r| r.method == method && r.path == key);
        if listed(&self.guarded) {
            Decision::Guard
        } else if listed(&self.public) {
            Decision::Public
        } else if self.unguarded == Unguarded::Refuse {
            Decision::Refuse
        } else if self.passport_required {
            Decision::Guard
        } else {
            Decision::Forward
        }
    }
}

impl RouteTable {
    /// The configured route (in `routes.guarded` or `routes.public`) `method` on `normal`
    /// takes, when it is one: a name of bounded cardinality, unlike the path a client
    /// sends.
    pub fn configured_route(&self, method: &Method, normal: &str) -> Option<&str> {
        let key = route_key(normal);
        self.guarded
            .iter()
            .chain(&self.public)
            .find(|r| r.method == method && r.path == key)
            .map(|r| r.path.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(method: Method, path: &str) -> Route {
        Route {
            method,
            path: path.into(),
        }
    }

    fn table(unguarded: Unguarded, required: bool) -> RouteTable {
        RouteTable::new(
            vec![route(Method::POST, "/v1/chat/completions")],
            vec![route(Method::GET, "/v1/models")],
            unguarded,
            required,
        )
    }

    #[test]
    fn a_trailing_slash_names_the_same_route() {
        let t = table(Unguarded::Forward, false);
        assert_eq!(
            t.decide(&Method::POST, "/v1/chat/completions/"),
            Decision::Guard
        );
        assert_eq!(t.decide(&Method::GET, "/v1/models/"), Decision::Public);
    }

    #[test]
    fn required_mode_guards_every_route_but_the_public_ones() {
        let t = table(Unguarded::Forward, true);
        assert_eq!(t.decide(&Method::POST, "/v1/other"), Decision::Guard);
        assert_eq!(
            t.decide(&Method::GET, "/v1/chat/completions"),
            Decision::Guard
        );
        assert_eq!(t.decide(&Method::GET, "/v1/models"), Decision::Public);
        let optional = table(Unguarded::Forward, false);
        assert_eq!(
            optional.decide(&Method::POST, "/v1/other"),
            Decision::Forward
        );
        let refuse = table(Unguarded::Refuse, true);
        assert_eq!(refuse.decide(&Method::POST, "/v1/other"), Decision::Refuse);
        assert_eq!(refuse.decide(&Method::GET, "/v1/models"), Decision::Public);
    }
}
