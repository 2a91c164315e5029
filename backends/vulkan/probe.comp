#version 450
// Writes gl_SubgroupSize: kp's device properties do not report it, and kernels pick paths by it.
#extension GL_KHR_shader_subgroup_basic : enable
layout(local_size_x = 1) in;
layout(std430, binding = 0) buffer Out { uint size_out[]; };
void main() { size_out[0] = gl_SubgroupSize; }
