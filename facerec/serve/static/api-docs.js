// Starts Swagger UI on /docs (facerec/serve/docs.py). A file of its own, not an inline
// script, so the page keeps the strict content security policy of the rest of the app.
"use strict";
(() => {
  const root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.openapi,
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null, // the default asks an outside server to validate the schema
    persistAuthorization: false,
    layout: "BaseLayout",
    presets: [SwaggerUIBundle.presets.apis],
  });
})();
