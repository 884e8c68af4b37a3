// Swagger UI's start-up as a file, not inline: the page's Content-Security-Policy allows no
// inline script. The page (service/apidocs.py) carries the schema's URL, prefix included.
const target = document.getElementById("swagger-ui");
window.ui = SwaggerUIBundle({
  url: target.dataset.openapiUrl,
  domNode: target,
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  // The default validator badge fetches from validator.swagger.io: nothing leaves the service.
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
  layout: "BaseLayout",
});
