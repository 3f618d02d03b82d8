//! `GET /docs` (Swagger UI), `GET /redoc` (ReDoc), their assets under `/docs/assets/`, and
//! `GET /openapi.json` ([`crate::openapi`]).
//!
//! The assets are embedded in the binary from the npm packages `swagger-ui-dist` and `redoc`
//! (see `assets/README.md`), so the pages work with no internet access. The pages run no inline
//! script: Swagger UI is started by a small script of our own served next to the bundle, and
//! ReDoc starts itself from its `<redoc spec-url>` element. Their Content-Security-Policy allows
//! `'self'` scripts only (plus a `blob:` worker, which ReDoc's search runs in).
//!
//! `ROOT_PATH` (the prefix a reverse proxy serves the receiver under) appears in the URLs these
//! pages link to; the routes themselves are unprefixed (the proxy strips the prefix).

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use http::{HeaderValue, Method, Response, StatusCode};

use crate::openapi::{OpenApi, escape};
use crate::response::{self, Body};

/// The version of `swagger-ui-dist` the assets come from.
pub const SWAGGER_UI_VERSION: &str = "5.35.0";
/// The version of `redoc` the assets come from.
pub const REDOC_VERSION: &str = "2.5.4";

/// Where the assets are served; each page links them with `?v=<version>`, so they may be cached
/// for a year.
const ASSETS: &str = "/docs/assets/";

const LONG_CACHE: HeaderValue = HeaderValue::from_static("public, max-age=31536000, immutable");
const NO_CACHE: HeaderValue = HeaderValue::from_static("no-cache");
const HTML: HeaderValue = HeaderValue::from_static("text/html; charset=utf-8");
const JS: HeaderValue = HeaderValue::from_static("text/javascript; charset=utf-8");
const CSS: HeaderValue = HeaderValue::from_static("text/css; charset=utf-8");
const PNG: HeaderValue = HeaderValue::from_static("image/png");

/// The policy of the two pages: only this origin's scripts and styles (inline styles, which both
/// UIs set), `data:` images and fonts, and ReDoc's search worker from a `blob:` URL.
const PAGE_CSP: HeaderValue = HeaderValue::from_static(
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; object-src 'none'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'",
);

/// Starts Swagger UI on the `#swagger-ui` element, with the document its `data-url` names.
const SWAGGER_INIT: &str = r##"window.addEventListener("load", function () {
  var el = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: el.getAttribute("data-url"),
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
    layout: "BaseLayout",
    showExtensions: true
  });
});
"##;

/// One embedded file.
struct Asset {
    name: &'static str,
    body: &'static [u8],
    content_type: HeaderValue,
}

static ASSET_FILES: [Asset; 5] = [
    Asset {
        name: "swagger-ui-bundle.js",
        body: include_bytes!("../assets/swagger-ui/swagger-ui-bundle.js"),
        content_type: JS,
    },
    Asset {
        name: "swagger-ui.css",
        body: include_bytes!("../assets/swagger-ui/swagger-ui.css"),
        content_type: CSS,
    },
    Asset {
        name: "favicon-32x32.png",
        body: include_bytes!("../assets/swagger-ui/favicon-32x32.png"),
        content_type: PNG,
    },
    Asset {
        name: "redoc.standalone.js",
        body: include_bytes!("../assets/redoc/redoc.standalone.js"),
        content_type: JS,
    },
    Asset {
        name: "swagger-init.js",
        body: SWAGGER_INIT.as_bytes(),
        content_type: JS,
    },
];

/// The OpenAPI routes of one receiver: the document, and the two pages rendered once.
pub(crate) struct Docs {
    openapi: OpenApi,
    swagger: Bytes,
    redoc: Bytes,
}

impl Docs {
    /// Render the pages for `root_path` and start keeping the document current.
    pub(crate) fn start(provider: &crate::Provider, root_path: &str) -> Self {
        let root = root_path.trim_end_matches('/');
        let v = |version: &str| format!("?v={}", escape(version));
        let (swagger_v, redoc_v, own_v) = (
            v(SWAGGER_UI_VERSION),
            v(REDOC_VERSION),
            v(env!("CARGO_PKG_VERSION")),
        );
        let root = escape(root);
        let spec = format!("{root}/openapi.json");
        let assets = format!("{root}{ASSETS}");
        let swagger = format!(
            r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Core Webhook Module API - Swagger UI</title>
<link rel="stylesheet" type="text/css" href="{assets}swagger-ui.css{swagger_v}">
<link rel="icon" type="image/png" href="{assets}favicon-32x32.png{swagger_v}">
</head>
<body>
<div id="swagger-ui" data-url="{spec}"></div>
<script src="{assets}swagger-ui-bundle.js{swagger_v}"></script>
<script src="{assets}swagger-init.js{own_v}"></script>
</body>
</html>
"#
        );
        let redoc = format!(
            r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Core Webhook Module API - ReDoc</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" type="image/png" href="{assets}favicon-32x32.png{swagger_v}">
</head>
<body>
<redoc spec-url="{spec}"></redoc>
<script src="{assets}redoc.standalone.js{redoc_v}"></script>
</body>
</html>
"#
        );
        Self {
            openapi: OpenApi::start(provider, root_path),
            swagger: swagger.into(),
            redoc: redoc.into(),
        }
    }

    /// Answer `path` if it is one of these routes.
    pub(crate) fn route(&self, method: &Method, path: &str) -> Option<Response<Body>> {
        let page = match path {
            "/openapi.json" => {
                let mut r = response::raw_json(StatusCode::OK, self.openapi.document());
                r.headers_mut().insert(CACHE_CONTROL, NO_CACHE);
                Some(r)
            }
            "/docs" => Some(page(self.swagger.clone())),
            "/redoc" => Some(page(self.redoc.clone())),
            _ => {
                let name = path.strip_prefix(ASSETS)?;
                let asset = ASSET_FILES.iter().find(|a| a.name == name)?;
                let mut r = Response::new(Body::new(Bytes::from_static(asset.body)));
                let h = r.headers_mut();
                h.insert(CONTENT_TYPE, asset.content_type.clone());
                h.insert(CACHE_CONTROL, LONG_CACHE);
                Some(r)
            }
        }?;
        // hyper sends no body in answer to HEAD, and keeps the GET answer's Content-Length.
        Some(match *method {
            Method::GET | Method::HEAD => page,
            _ => response::method_not_allowed("GET"),
        })
    }
}

fn page(html: Bytes) -> Response<Body> {
    let mut r = Response::new(Body::new(html));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HTML);
    h.insert(CACHE_CONTROL, NO_CACHE);
    // Replaces the receiver's default policy (the security headers keep a response's own).
    h.insert(CONTENT_SECURITY_POLICY, PAGE_CSP);
    r
}
