"""GLASS for autovi: a feature adaptor and a patch discriminator trained on gradient-ascent and Perlin/texture synthetic anomalies."""
