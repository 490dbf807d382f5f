package com.mobile_distill.demo

import com.mobile_distill.core.Embedder
import org.tensorflow.lite.Interpreter
import java.nio.ByteBuffer

/**
 * The only class that touches LiteRT (the `com.google.ai.edge.litert:litert` AAR keeps the
 * `org.tensorflow.lite` package). Everything else in the app compiles without LiteRT; this file
 * can't be compiled in the toolkit's CI (the AAR is on Google's Maven only), see README.md.
 */
class LiteRtEmbedder(model: ByteBuffer, threads: Int) : Embedder {
    private val interpreter = Interpreter(model, Interpreter.Options().setNumThreads(threads))

    override val embeddingDim: Int = interpreter.getOutputTensor(0).shape().last()

    override fun embed(input: ByteBuffer): FloatArray {
        val out = arrayOf(FloatArray(embeddingDim))
        interpreter.run(input, out)
        return out[0]
    }

    override fun close() = interpreter.close()
}
