// Starts Swagger UI on /docs. A file, not an inline script: the page's CSP allows no inline code.
"use strict";
(function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.openapiUrl,
    domNode: root,
    deepLinking: true,
    validatorUrl: null, // the default sends the document to a public validator
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
})();
