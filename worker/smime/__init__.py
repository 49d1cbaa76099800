"""The wire format: DER, CMS structures, base64 lines, MIME framing, bodies; knows neither pipelines nor the broker.

One module per CMS structure, each written as DER from cryptography's primitives: ``signed`` (SignedData,
RFC 5652 §5), ``recipients`` (RecipientInfos: RSA key transport, ECDH key agreement, RFC 5753),
``enveloped`` (EnvelopedData, AES-CBC), ``authenveloped`` (AuthEnvelopedData, AES-GCM, RFC 5083/5084),
``compressed`` (CompressedData, RFC 3274); ``identifiers`` holds what they share. Every layer streams:
the body part is base64-encoded, hashed, wrapped in signed-data, base64-encoded again, AES-encrypted and
base64-encoded once more, block by block, into the one buffer that becomes the message. No layer is held
whole (except a clear-signed part, which multipart/signed needs as it is, an EC-signed body part up to
4 MiB, and a compressed layer, whose size is known only once compressed), so a message costs about its
output in memory. tests/test_cms.py proves the DER byte-identical to cryptography's PKCS7 builders; the
openssl CLI, Bouncy Castle and gpgsm open it in tests/test_interop*.py.
"""
