// What a Bouncy Castle based AS2/S-MIME receiver does with a sendpipe entity (tests/test_interop_bc.py).
//
// Started once per pytest session; reads one request per line on stdin, tab-separated key=value fields:
//   in=<entity file>  out=<payload file>  trust=<root CA PEM>  [keys=<key PEM>,...  certs=<cert PEM>,...]
//   [signer=<signer cert PEM, when the message carries none>]
// and answers one line: "OK\t<layers>\t<signer SHA-1 or ->\t<index of the RecipientInfo used or ->"
// or "ERR\t<exception class>: <message>". Layer by layer, as javax.mail and bcmail parse them:
// multipart/signed (SMIMESigned), pkcs7-mime enveloped-data (SMIMEEnveloped), authEnveloped-data
// (CMSAuthEnvelopedData: bcmail 1.72 has no SMIME class for it), signed-data (SMIMESigned), compressed-data
// (SMIMECompressed, zlib); the payload part is decoded by javax.mail (base64, quoted-printable, binary)
// and written as it is. Every signature is verified with the signer's certificate and the signer's path
// is validated with PKIX against the given root alone (intermediates from the message).
import java.io.BufferedReader;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.FileInputStream;
import java.io.FileOutputStream;
import java.io.FileReader;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.PrivateKey;
import java.security.Security;
import java.security.cert.CertPathBuilder;
import java.security.cert.CertStore;
import java.security.cert.CertificateFactory;
import java.security.cert.CollectionCertStoreParameters;
import java.security.cert.PKIXBuilderParameters;
import java.security.cert.TrustAnchor;
import java.security.cert.X509CertSelector;
import java.security.cert.X509Certificate;
import java.util.ArrayList;
import java.util.Collection;
import java.util.Collections;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;

import javax.mail.Session;
import javax.mail.internet.MimeBodyPart;
import javax.mail.internet.MimeMessage;
import javax.mail.internet.MimeMultipart;
import javax.mail.internet.MimePart;

import org.bouncycastle.cert.X509CertificateHolder;
import org.bouncycastle.cert.jcajce.JcaX509CertificateConverter;
import org.bouncycastle.cms.CMSAuthEnvelopedData;
import org.bouncycastle.cms.CMSSignedData;
import org.bouncycastle.cms.Recipient;
import org.bouncycastle.cms.RecipientId;
import org.bouncycastle.cms.RecipientInformation;
import org.bouncycastle.cms.RecipientInformationStore;
import org.bouncycastle.cms.SignerInformation;
import org.bouncycastle.cms.jcajce.JcaSimpleSignerInfoVerifierBuilder;
import org.bouncycastle.cms.jcajce.JceKeyAgreeEnvelopedRecipient;
import org.bouncycastle.cms.jcajce.JceKeyAgreeRecipientId;
import org.bouncycastle.cms.jcajce.JceKeyTransAuthEnvelopedRecipient;
import org.bouncycastle.cms.jcajce.JceKeyTransEnvelopedRecipient;
import org.bouncycastle.cms.jcajce.JceKeyTransRecipientId;
import org.bouncycastle.cms.jcajce.ZlibExpanderProvider;
import org.bouncycastle.jce.provider.BouncyCastleProvider;
import org.bouncycastle.mail.smime.SMIMECompressed;
import org.bouncycastle.mail.smime.SMIMEEnveloped;
import org.bouncycastle.mail.smime.SMIMESigned;
import org.bouncycastle.mail.smime.SMIMEUtil;
import org.bouncycastle.openssl.PEMKeyPair;
import org.bouncycastle.openssl.PEMParser;
import org.bouncycastle.openssl.jcajce.JcaPEMKeyConverter;
import org.bouncycastle.asn1.pkcs.PrivateKeyInfo;

public final class BcReceiver {
    private static final Session SESSION = Session.getDefaultInstance(new Properties());
    private static final int MAX_LAYERS = 8;

    private BcReceiver() {}

    public static void main(String[] args) throws Exception {
        Security.addProvider(new BouncyCastleProvider());
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        PrintStream out = new PrintStream(System.out, true, "UTF-8");
        out.println("READY " + org.bouncycastle.util.Properties.class.getPackage().getImplementationVersion());
        String line;
        while ((line = in.readLine()) != null) {
            if (line.isEmpty()) {
                continue;
            }
            try {
                out.println("OK\t" + handle(fields(line)));
            } catch (Exception e) {
                String message = String.valueOf(e.getMessage()).replace('\n', ' ').replace('\t', ' ');
                Throwable cause = e.getCause();
                if (cause != null) {
                    message += " (cause: " + cause.getClass().getSimpleName() + ": "
                        + String.valueOf(cause.getMessage()).replace('\n', ' ').replace('\t', ' ') + ")";
                }
                out.println("ERR\t" + e.getClass().getSimpleName() + ": " + message);
            }
        }
    }

    private static Map<String, String> fields(String line) {
        Map<String, String> map = new HashMap<>();
        for (String field : line.split("\t")) {
            int eq = field.indexOf('=');
            map.put(field.substring(0, eq), field.substring(eq + 1));
        }
        return map;
    }

    private static List<String> list(Map<String, String> request, String name) {
        String value = request.get(name);
        List<String> out = new ArrayList<>();
        if (value != null && !value.isEmpty()) {
            Collections.addAll(out, value.split(","));
        }
        return out;
    }

    private static String handle(Map<String, String> request) throws Exception {
        List<X509Certificate> certs = new ArrayList<>();
        for (String path : list(request, "certs")) {
            certs.add(certificate(path));
        }
        List<PrivateKey> keys = new ArrayList<>();
        for (String path : list(request, "keys")) {
            keys.add(privateKey(path));
        }
        X509Certificate root = certificate(request.get("trust"));
        X509Certificate given = request.containsKey("signer") ? certificate(request.get("signer")) : null;
        MimePart part;
        try (InputStream stream = new FileInputStream(request.get("in"))) {
            part = new MimeMessage(SESSION, stream);
        }
        List<String> layers = new ArrayList<>();
        String signer = "-";
        String used = "-";
        for (int round = 0; ; round++) {
            if (round == MAX_LAYERS) {
                throw new IllegalStateException("too many layers: " + layers);
            }
            String type = part.getContentType().toLowerCase();
            if (type.startsWith("multipart/signed")) {
                SMIMESigned signed = new SMIMESigned((MimeMultipart) part.getContent());
                signer = verify(signed, root, given);
                layers.add("multipart/signed");
                part = signed.getContent();
            } else if (type.contains("pkcs7-mime") && type.contains("enveloped-data")
                    && !type.contains("authenveloped-data")) {
                SMIMEEnveloped enveloped = new SMIMEEnveloped((MimeBodyPart) asBodyPart(part));
                RecipientInformationStore store = enveloped.getRecipientInfos();
                int[] index = new int[1];
                RecipientInformation recipient = match(store, certs, index);
                Recipient opener = recipient.getRID().getType() == RecipientId.keyAgree
                    ? new JceKeyAgreeEnvelopedRecipient(keys.get(index[0] >> 16)).setProvider("BC")
                    : new JceKeyTransEnvelopedRecipient(keys.get(index[0] >> 16)).setProvider("BC");
                used = String.valueOf(index[0] & 0xFFFF);
                part = SMIMEUtil.toMimeBodyPart(recipient.getContent(opener));
                layers.add("enveloped-data");
            } else if (type.contains("pkcs7-mime") && type.contains("authenveloped-data")) {
                CMSAuthEnvelopedData auth = new CMSAuthEnvelopedData(asBodyPart(part).getInputStream());
                int[] index = new int[1];
                RecipientInformation recipient = match(auth.getRecipientInfos(), certs, index);
                PrivateKey key = keys.get(index[0] >> 16);
                Recipient opener = recipient.getRID().getType() == RecipientId.keyAgree
                    ? new JceKeyAgreeEnvelopedRecipient(key).setProvider("BC")
                    : new JceKeyTransAuthEnvelopedRecipient(key).setProvider("BC");
                used = String.valueOf(index[0] & 0xFFFF);
                part = SMIMEUtil.toMimeBodyPart(recipient.getContent(opener));
                layers.add("authEnveloped-data");
            } else if (type.contains("pkcs7-mime") && type.contains("signed-data")) {
                SMIMESigned signed = new SMIMESigned(part);
                signer = verify(signed, root, given);
                layers.add("signed-data");
                part = signed.getContent();
            } else if (type.contains("pkcs7-mime") && type.contains("compressed-data")) {
                SMIMECompressed compressed = new SMIMECompressed((MimeBodyPart) asBodyPart(part));
                part = SMIMEUtil.toMimeBodyPart(compressed.getContent(new ZlibExpanderProvider()));
                layers.add("compressed-data");
            } else {
                break;
            }
        }
        ByteArrayOutputStream payload = new ByteArrayOutputStream();
        try (InputStream decoded = part.getInputStream()) {
            decoded.transferTo(payload);
        }
        try (FileOutputStream file = new FileOutputStream(request.get("out"))) {
            payload.writeTo(file);
        }
        return String.join(">", layers) + "\t" + signer + "\t" + used;
    }

    private static MimePart asBodyPart(MimePart part) throws Exception {
        if (part instanceof MimeBodyPart) {
            return part;
        }
        // The outermost layer is parsed as a message; bcmail's SMIME classes take a body part.
        ByteArrayOutputStream raw = new ByteArrayOutputStream();
        ((MimeMessage) part).writeTo(raw);
        return new MimeBodyPart(new ByteArrayInputStream(raw.toByteArray()));
    }

    // The RecipientInfo that one of the given certificates names; index = key number << 16 | position.
    private static RecipientInformation match(
            RecipientInformationStore store, List<X509Certificate> certs, int[] index) throws Exception {
        List<RecipientInformation> all = new ArrayList<>(store.getRecipients());
        for (int k = 0; k < certs.size(); k++) {
            X509Certificate cert = certs.get(k);
            RecipientId wanted = cert.getPublicKey().getAlgorithm().equals("EC")
                ? new JceKeyAgreeRecipientId(cert) : new JceKeyTransRecipientId(cert);
            // The store matches issuerAndSerialNumber (or subjectKeyIdentifier) the way RFC 5652 §6.2 names it.
            RecipientInformation found = store.get(wanted);
            if (found != null) {
                index[0] = (k << 16) | all.indexOf(found);
                return found;
            }
        }
        throw new IllegalArgumentException("no RecipientInfo for the given certificates (" + all.size() + " present)");
    }

    private static String verify(CMSSignedData signed, X509Certificate root, X509Certificate given) throws Exception {
        Collection<X509CertificateHolder> carried = signed.getCertificates().getMatches(null);
        JcaX509CertificateConverter converter = new JcaX509CertificateConverter().setProvider("BC");
        List<X509Certificate> pool = new ArrayList<>();
        for (X509CertificateHolder holder : carried) {
            pool.add(converter.getCertificate(holder));
        }
        if (given != null) {
            pool.add(given);
        }
        Collection<SignerInformation> signers = signed.getSignerInfos().getSigners();
        if (signers.size() != 1) {
            throw new IllegalStateException(signers.size() + " signers");
        }
        SignerInformation info = signers.iterator().next();
        X509Certificate cert = null;
        for (X509Certificate candidate : pool) {
            if (info.getSID().match(new X509CertificateHolder(candidate.getEncoded()))) {
                cert = candidate;
            }
        }
        if (cert == null) {
            throw new IllegalStateException("signer certificate not found");
        }
        if (!info.verify(new JcaSimpleSignerInfoVerifierBuilder().setProvider("BC").build(cert))) {
            throw new SecurityException("signature does not verify");
        }
        // The path to the root the partner trusts, intermediates only from the message (add_signing_chain).
        X509CertSelector target = new X509CertSelector();
        target.setCertificate(cert);
        PKIXBuilderParameters params = new PKIXBuilderParameters(
            Collections.singleton(new TrustAnchor(root, null)), target);
        params.setRevocationEnabled(false);
        params.addCertStore(CertStore.getInstance("Collection", new CollectionCertStoreParameters(pool), "BC"));
        CertPathBuilder.getInstance("PKIX", "BC").build(params);
        StringBuilder hex = new StringBuilder();
        for (byte b : MessageDigest.getInstance("SHA-1").digest(cert.getEncoded())) {
            hex.append(String.format("%02X", b));
        }
        return hex.toString();
    }

    private static X509Certificate certificate(String path) throws Exception {
        try (InputStream stream = new FileInputStream(path)) {
            return (X509Certificate) CertificateFactory.getInstance("X.509").generateCertificate(stream);
        }
    }

    private static PrivateKey privateKey(String path) throws Exception {
        try (PEMParser parser = new PEMParser(new FileReader(path))) {
            Object object = parser.readObject();
            JcaPEMKeyConverter converter = new JcaPEMKeyConverter().setProvider("BC");
            if (object instanceof PEMKeyPair) {
                return converter.getKeyPair((PEMKeyPair) object).getPrivate();
            }
            return converter.getPrivateKey((PrivateKeyInfo) object);
        }
    }
}
