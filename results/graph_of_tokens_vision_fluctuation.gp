set terminal pngcairo size 900,560 enhanced font 'Sans,11'
set output 'results/graph_of_tokens_vision_fluctuation.png.tmp.18585'
$s0 << EOD
2 54.3198529
3 42.0955882
4 34.0533088
5 24.4332108
6 14.5373775
EOD
$s1 << EOD
2 45.1593137
3 41.0386029
4 38.8786765
5 25.4442402
6 15.4871324
EOD
$s2 << EOD
2 53.9215686
3 49.2034314
4 48.6519608
5 41.6207108
6 27.7113971
EOD
set title "Graph of tokens, vision: V-MoE vs Similarity-Aware vs\nAttention-Aware: routing fluctuation per epoch"
set xlabel "epoch"
set ylabel "top-1 fluctuation (%, mean over layers and seeds)"
set grid
set key outside right top
set xtics 1
plot $s0 using 1:2 with linespoints lw 2 title "V-MoE (token choice)", $s1 using 1:2 with linespoints lw 2 title "Similarity-Aware V-MoE", $s2 using 1:2 with linespoints lw 2 title "Attention-Aware V-MoE"
