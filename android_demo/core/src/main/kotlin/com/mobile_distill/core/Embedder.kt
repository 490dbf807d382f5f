package com.mobile_distill.core

import java.nio.ByteBuffer

/** Runs the student: one preprocessed input buffer in, one L2-normalised embedding out. */
interface Embedder : AutoCloseable {
    val embeddingDim: Int

    fun embed(input: ByteBuffer): FloatArray
}
