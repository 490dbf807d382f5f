package com.mobile_distill.demo

import com.mobile_distill.core.Embedder
import java.nio.ByteBuffer

// Compile-check stand-in for app/src/main/kotlin/.../LiteRtEmbedder.kt (whose LiteRT AAR is on
// Google's Maven only): the same public API, no body. Never packaged into the app.
class LiteRtEmbedder(model: ByteBuffer, threads: Int) : Embedder {
    override val embeddingDim: Int = 0

    override fun embed(input: ByteBuffer): FloatArray = throw UnsupportedOperationException("stub")

    override fun close() {}
}
