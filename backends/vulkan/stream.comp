#version 450
// STREAM kernels (McCalpin's copy and triad, and a write-only fill): the bandwidth ceilings `bench ops` holds each
// op's GB/s against (backends/base.py Backend.stream). One define picks the kernel: COPY c = a, TRIAD a = b + s*c,
// FILL a = s. Bindings: 0 the scalar s, 1 the output, 2 and 3 the inputs a kernel reads.
// Each thread moves one vec4 with no loop and no branch (lavapipe runs a load inside either lane by lane): the host
// dispatches exactly n / (4 * WG) workgroups (VulkanBackend.stream_granule), so no thread falls outside the arrays.
#define WG 256
layout(local_size_x = WG) in;

layout(std430, binding = 0) readonly buffer ScalarBuf { float s; };
layout(std430, binding = 1) writeonly buffer OutBuf { vec4 OUT[]; };
#if defined(COPY) || defined(TRIAD)
layout(std430, binding = 2) readonly buffer In0Buf { vec4 IN0[]; };
#endif
#ifdef TRIAD
layout(std430, binding = 3) readonly buffer In1Buf { vec4 IN1[]; };
#endif

void main() {
    const uint i = gl_GlobalInvocationID.x;
#if defined(COPY)
    OUT[i] = IN0[i];
#elif defined(TRIAD)
    OUT[i] = IN0[i] + s * IN1[i];
#elif defined(FILL)
    OUT[i] = vec4(s);
#else
#error "define COPY, TRIAD or FILL"
#endif
}
