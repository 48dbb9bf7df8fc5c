"""The data's journey in: phantom or radiographs -> readers -> preprocess -> cache -> splits -> tf.data (chapter 2)."""
