"""Hand-vectorised pieces of the CPU kernels, as Numba intrinsics (LLVM IR).

The column pass of a bilinear resize reads each output pixel's two taps at data-
dependent columns. LLVM will not vectorise that loop (its loads may alias its stores),
and a hardware gather is slower than scalar loads on the CPUs measured here (AMD Zen:
0.6 vs 0.45 ns per value). But 16 consecutive output columns of a resize by at most
~2x read at most 32 consecutive source values. So two vector loads and AVX-512's
two-table permute (``vpermi2ps``, a lookup in 32 floats held in registers) fetch
all 32 taps: 0.2 vs 0.45 ns per value, bit-identical to the scalar loop (same
operations, same order, no FMA contraction).

Only for float32 on x86-64 CPUs with AVX-512F; :func:`available` decides. Elsewhere
the kernels keep their scalar loop, and ``DALI_SNAPMIX_SIMD=0`` forces that loop
(the tests run both).
"""

from __future__ import annotations

import functools
import os
import platform

LANES = 16  # floats in one AVX-512 register
WINDOW = 2 * LANES  # source values one permute can reach


@functools.cache
def available() -> bool:
    """Whether the CPU kernels may use AVX-512 (``DALI_SNAPMIX_SIMD=0`` says no).

    Numba compiles for the host CPU unless ``NUMBA_CPU_NAME`` names another. Then
    we only assume AVX-512 if ``NUMBA_CPU_FEATURES`` lists it."""
    if os.environ.get("DALI_SNAPMIX_SIMD", "1") == "0":
        return False
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    import numba

    if numba.config.CPU_FEATURES:
        return "+avx512f" in numba.config.CPU_FEATURES.split(",")
    if numba.config.CPU_NAME not in (None, "host"):
        return False
    import llvmlite.binding as llvm

    return bool(llvm.get_host_cpu_features().get("avx512f", False))


@functools.cache
def lerp3_perm16():
    """The intrinsic ``lerp3_perm16(o0, o1, o2, t0, t1, t2, base, i0, i1, w, k)``.

    For lanes ``x = k .. k + 15`` and each plane p: ``o_p[x] = (1 - w[x]) * t_p[i0[x]]
    + w[x] * t_p[i1[x]]``. Its preconditions are not checked:
    * every tap lies in ``[base, base + 32)``;
    * ``t_p`` is readable up to ``base + 32``;
    * all arrays are 1-D and contiguous;
    * ``i0`` and ``i1`` hold int32 or int64, ``t_p``, ``o_p`` and ``w`` float32.
    Built on first use, so importing the kernels needs neither AVX-512 nor LLVM."""
    from llvmlite import ir
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic

    f32, i32 = ir.FloatType(), ir.IntType(32)
    vf, vi = ir.VectorType(f32, LANES), ir.VectorType(i32, LANES)

    @intrinsic
    def lerp3_perm16(typingctx, o0, o1, o2, t0, t1, t2, base, i0, i1, w, k):
        sig = types.void(o0, o1, o2, t0, t1, t2, base, i0, i1, w, k)

        def codegen(context, builder, signature, args):
            tys = signature.args
            ptr = [context.make_array(ty)(context, builder, a).data if isinstance(ty, types.Array) else None
                   for a, ty in zip(args, tys)]
            base_v, kk = args[6], args[10]

            def vload(p, off, vty):
                return builder.load(builder.bitcast(builder.gep(p, [off]), vty.as_pointer()), align=4)

            def splat(v):
                one = builder.insert_element(ir.Constant(vi, ir.Undefined), v, ir.Constant(i32, 0))
                return builder.shuffle_vector(one, ir.Constant(vi, ir.Undefined), ir.Constant(vi, [0] * LANES))

            def rel(p, ty):  # tap columns relative to base, as the permute's int32 indices
                v = vload(p, kk, ir.VectorType(context.get_data_type(ty.dtype), LANES))
                return builder.sub(builder.trunc(v, vi) if v.type.element.width > 32 else v,
                                   splat(builder.trunc(base_v, i32)))

            r0, r1 = rel(ptr[7], tys[7]), rel(ptr[8], tys[8])
            wv = vload(ptr[9], kk, vf)
            omw = builder.fsub(ir.Constant(vf, [1.0] * LANES), wv)
            permute = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vf, [vf, vi, vf]), "llvm.x86.avx512.vpermi2var.ps.512")
            hi_off = builder.add(base_v, ir.Constant(base_v.type, LANES))
            for p in range(3):
                lo, hi = vload(ptr[3 + p], base_v, vf), vload(ptr[3 + p], hi_off, vf)
                a = builder.call(permute, [lo, r0, hi])
                b = builder.call(permute, [lo, r1, hi])
                out = builder.fadd(builder.fmul(omw, a), builder.fmul(wv, b))  # lerp's order, no FMA
                builder.store(out, builder.bitcast(builder.gep(ptr[p], [kk]), vf.as_pointer()), align=4)
            return context.get_dummy_value()

        return sig, codegen

    return lerp3_perm16
