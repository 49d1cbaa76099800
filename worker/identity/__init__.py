"""Us and them as certificates: thumbprints, certificate rules, the store of one service account."""
