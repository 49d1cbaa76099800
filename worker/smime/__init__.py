"""The wire format: DER, CMS structures, base64 lines, MIME framing, bodies; knows neither pipelines nor the broker."""
