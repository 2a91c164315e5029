// exp_precise, shared by unary.comp and softmax.comp.
// `precise` keeps the driver from re-associating these error-compensating steps (NIR would fold (1+u)-1 to u).

// exp with Cody-Waite range reduction and a Taylor polynomial: a few ulp everywhere, so the finite/inf boundary
// near 88.72 matches a float64 reference (a driver's exp2(x*log2e) is off by up to |x|*2^-24 relative there).
float exp_precise(float x) {
    float k = roundEven(clamp(x, -104.0, 88.8) * 1.4426950408889634);
    precise float r = (x - k * 0.693145751953125) - k * 1.4286068203094172e-06; // ln2 split: k * hi is exact
    float p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0
              + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    int ki = int(k);
    int k1 = ki / 2; // 2^k in two exact factors so 2^128 does not overflow before the product does
    float y = p * uintBitsToFloat(uint(k1 + 127) << 23) * uintBitsToFloat(uint(ki - k1 + 127) << 23);
    y = x > 88.8 ? uintBitsToFloat(0x7F800000u) : x < -104.0 ? 0.0 : y;
    return isnan(x) ? x : y;
}
